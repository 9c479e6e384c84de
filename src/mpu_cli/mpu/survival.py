"""How much of a copy's noise survives publication in the published dtype (server-side measurement).

A copy is published as cast(T_k(θ + α_k ε⁰_k)). In a low-precision dtype (bf16: 8 significant bits, a spacing of
~1e-4 at |w| ≈ 0.02) noise far below the spacing rounds back to the noise-free value cast(T_k(θ)), so the client
receives less noise than κ says. Per copy and per transformer block (and over every noised tensor):

- changed_frac: the fraction of published elements that differ from the noise-free published value cast(T_k(θ));
- effective_kappa: RMS(published − cast(T_k(θ))) / RMS(θ − θ_base), in fp32 — the noise the client really gets,
  in units of the σ reference (θ − θ_base, or θ itself under noise_reference=raw); α_k·κ when all of it survives;
- effective_kappa_vs_exact: the same against the exact T_k(θ) (fp32), so it also counts the rounding of θ itself.

The run-level numbers (results.csv) divide each copy's value by its α_k and average over the copies, so they read
as a κ: κ when all noise survives, near 0 when publication rounds it away. These numbers involve θ and α: they stay
in the server's private state and the run's results, never in anything the client receives.
"""

from __future__ import annotations

import json
import math

import torch

from .noise import _sq_sum

METRICS = ("changed_frac", "effective_kappa", "effective_kappa_vs_exact")
# results.csv columns written from the rounds' records (`result_columns`); *_blocks: one value per block, JSON
RESULT_COLUMNS = ("published_dtype", "published_changed_frac", "effective_kappa", "effective_kappa_vs_exact",
                  "published_changed_frac_blocks", "effective_kappa_blocks", "effective_kappa_vs_exact_blocks")
UNPROTECTED = "unprotected"  # the group of embeddings / final norm / LM head (measured only when they are noised)
# elements per slice measured at once: a slice's temporaries stay in the core's cache (on this project's CPU 3x
# faster than slices of 4M elements, whose temporaries go through memory)
_SLICE = 1 << 18


class SurvivalMeter:
    """Accumulates, per copy and group (a block index or UNPROTECTED): elements, changed elements, and the
    squared differences to the cast and to the exact noise-free copy; per group the squared σ reference.

    references: {group: Σ(θ − θ_base)²} already summed (the server's σ pass); other groups are summed here."""

    def __init__(self, n_copies: int, references: dict | None = None):
        self.n_copies = n_copies
        self._acc: dict[tuple[int, object], list[float]] = {}
        self._ref: dict[object, float] = dict(references or {})
        self._given = set(self._ref)
        self._dtypes: set[str] = set()

    def needs_reference(self, group) -> bool:
        return group not in self._given

    def add_reference(self, group, theta: torch.Tensor, base: torch.Tensor | None) -> None:
        """Σ(θ − θ_base)² of one tensor of `group` (Σθ² without a base): the denominator of effective κ."""
        self._ref[group] = self._ref.get(group, 0.0) + _sq_sum(theta, base)

    def add(self, k: int, group, published: torch.Tensor, exact: torch.Tensor) -> None:
        """published: copy k's tensor as sent (its dtype); exact: the same tensor without noise, fp32, its elements
        paired with published's (T_k(θ), or θ itself when T_k only moves elements and published is unmoved)."""
        self._dtypes.add(str(published.dtype).removeprefix("torch."))
        acc = self._acc.setdefault((k, group), [0, 0, 0.0, 0.0])
        p, e = published.reshape(-1), exact.reshape(-1).to(published.device)
        for i in range(0, p.numel(), _SLICE):
            pc, ec = p[i : i + _SLICE], e[i : i + _SLICE].float()
            pf = pc.float()
            d = pf - ec  # against the exact copy
            # against the cast of the exact copy (published in fp32: the cast is the exact copy itself)
            d_cast = d if pc.dtype == ec.dtype else pf.sub_(ec.to(pc.dtype).float())
            sq_cast = _sq(d_cast)
            acc[0] += pc.numel()
            acc[1] += int(torch.count_nonzero(d_cast))  # x − y is ±0 exactly where x == y (finite values)
            acc[2] += sq_cast
            acc[3] += sq_cast if d_cast is d else _sq(d)

    @property
    def published_dtype(self) -> str:
        return "+".join(sorted(self._dtypes)) or "none"

    def _values(self, k: int, groups: list) -> dict[str, float]:
        n = changed = sq_cast = sq_exact = ref = 0.0
        for g in groups:
            a = self._acc.get((k, g))
            if a is None:
                continue
            n, changed, sq_cast, sq_exact = n + a[0], changed + a[1], sq_cast + a[2], sq_exact + a[3]
            ref += self._ref.get(g, 0.0)
        ratio = lambda sq: math.sqrt(sq / ref) if ref > 0 else math.nan  # noqa: E731 (θ = θ_base: no σ reference)
        return {"changed_frac": changed / n if n else 0.0, "effective_kappa": ratio(sq_cast),
                "effective_kappa_vs_exact": ratio(sq_exact)}

    def result(self, round_: int, kappa: float, alphas: list[float]) -> dict:
        """The round's record: per copy (overall and per block) and the summary over the copies (each copy's
        effective κ divided by its α_k, then averaged; changed_frac averaged)."""
        groups = sorted({g for _, g in self._acc}, key=lambda g: (isinstance(g, str), g))
        blocks = [g for g in groups if not isinstance(g, str)]
        copies = []
        for k in range(self.n_copies):
            per_block = [self._values(k, [b]) for b in blocks]
            copies.append({"copy": k + 1, "nominal_kappa": alphas[k] * kappa, **self._values(k, groups),
                           "blocks": {m: [v[m] for v in per_block] for m in METRICS}})

        def scaled(c: dict, m: str, v: float) -> float:
            return v if m == "changed_frac" else v / alphas[c["copy"] - 1]

        summary = {m: _mean([scaled(c, m, c[m]) for c in copies]) for m in METRICS}
        summary["blocks"] = {m: [_mean([scaled(c, m, c["blocks"][m][i]) for c in copies]) for i in range(len(blocks))]
                             for m in METRICS}
        return {"round": round_, "kappa": kappa, "published_dtype": self.published_dtype, "blocks": blocks,
                "groups": [str(g) for g in groups], "copies": copies, "summary": summary}


def _sq(v: torch.Tensor) -> float:
    """Σv² of one cache-sized fp32 slice by an fp32 dot product (the slices' sums are added in float64). The record
    is a statistic read to a few digits: the fp32 sum of a slice's 256 K squares is within ~1e-6 of the float64 one
    (measured at the 1B shape), and skipping the float64 copy of every slice makes the record 2.8x cheaper. σ's sums
    are another matter: noise._sq_sum keeps float64 and a fixed order, since σ's bits decide the copies'."""
    return float(torch.dot(v, v))


def result_columns(rounds: list[dict]) -> dict:
    """results.csv's RESULT_COLUMNS from the rounds' records (the mean over rounds; blank without a record)."""
    if not rounds:
        return dict.fromkeys(RESULT_COLUMNS)

    s = [r["summary"] for r in rounds]
    n_blocks = min(len(x["blocks"]["changed_frac"]) for x in s)
    out = {"published_dtype": "+".join(sorted({r["published_dtype"] for r in rounds}))}
    for m, col in zip(METRICS, ("published_changed_frac", "effective_kappa", "effective_kappa_vs_exact")):
        out[col] = _mean([x[m] for x in s])
        out[f"{col}_blocks"] = json.dumps([_mean([x["blocks"][m][i] for x in s]) for i in range(n_blocks)])
    return {c: out[c] for c in RESULT_COLUMNS}


def _mean(values: list) -> float | None:
    """The mean of the finite values (a record read back from JSON has null for NaN); None when there is none."""
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else None
