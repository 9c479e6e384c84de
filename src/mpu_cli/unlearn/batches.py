"""The client's epoch plan, shared by the plain and the accelerate loop."""
from __future__ import annotations

import random


def epoch_batches(n_forget: int, n_retain: int, batch_size: int, rng: random.Random) -> list[list[tuple]]:
    """Shuffle the forget set and pair each forget item with a randomly drawn retain item."""
    order = list(range(n_forget))
    rng.shuffle(order)
    pairs = [(i, rng.randrange(n_retain) if n_retain else None) for i in order]
    return [pairs[s : s + batch_size] for s in range(0, len(pairs), batch_size)]
