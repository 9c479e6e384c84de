"""Noise scales, zero-sum base noise across copies and the secret per-copy scalings α (Pre-Process)."""

from __future__ import annotations

import math

import torch

from mpu_cli.models.family import block_of

from .settings import ALPHA_SCHEDULES
from .streaming import worker_threads

_CHUNK = 1 << 22  # elements per float64 chunk: bounds the temporary memory of a reduction on a large tensor
_SLICE = 1 << 16  # elements per slice of a chunk: formed while in the core's cache


def _reference(base: dict | None, name: str, t: torch.Tensor) -> torch.Tensor | None:
    if base is None:
        return None
    if name not in base:
        raise ValueError(f"base model has no tensor {name!r}; it must have every tensor of the model")
    ref = base[name]
    if ref.shape != t.shape:
        raise ValueError(f"base tensor {name!r} has shape {tuple(ref.shape)}, model has {tuple(t.shape)}")
    return ref


def _sq_sum(t: torch.Tensor, ref: torch.Tensor | None) -> float:
    """sum((t - ref)^2) in float64, chunked so a large tensor never gets a full float64 copy. Each chunk's squares
    are formed a cache-sized slice at a time into one buffer, then the chunk is summed as a whole."""
    a = t.reshape(-1)
    b = None if ref is None else ref.reshape(-1).to(a.device)
    total = 0.0
    buf = torch.empty(min(_CHUNK, a.numel()), dtype=torch.float64, device=a.device)
    for i in range(0, a.numel(), _CHUNK):
        v = buf[: min(_CHUNK, a.numel() - i)]
        for j in range(0, v.numel(), _SLICE):
            w = v[j : j + _SLICE]
            w.copy_(a[i + j : i + j + w.numel()])
            if b is not None:
                w.sub_(b[i + j : i + j + w.numel()].double())
            w.square_()
        total += float(v.sum())
    return total


def _sq_sum_count(items, base: dict | None) -> tuple[float, int]:
    total, count = 0.0, 0
    for name, t in items:
        total += _sq_sum(t, _reference(base, name, t))
        count += t.numel()
    return total, count


def sigma_of(sq_sum_count: tuple[float, int], kappa: float) -> float:
    """κ · RMS from (Σ(θ − θ_base)², element count); 0 for no element."""
    total, count = sq_sum_count
    return kappa * math.sqrt(total / count) if count else 0.0


def block_sq_sums(theta, base, layout) -> dict[int, tuple[float, int]]:
    """Per block l: (Σ(θ_l − θ_base,l)² in float64, its element count); Σθ_l² when base is None. σ_l is made from
    it (`sigma_of`), and so is the noise survival record's reference, so one read of θ and the base serves both.
    theta, base: mappings read one tensor at a time (a lazily read model holds one tensor of each)."""
    names: dict[int, list] = {}
    for name in theta:
        layer = block_of(name)
        if layer is None:
            continue
        if layer >= layout.num_layers:
            raise ValueError(
                f"tensor {name!r} is in block {layer}, but the model has {layout.num_layers} layers"
            )
        names.setdefault(layer, []).append(name)
    return {layer: _sq_sum_count(((n, theta[n]) for n in group), base) for layer, group in sorted(names.items())}


def block_sigmas(theta, base, kappa: float, layout) -> dict[int, float]:
    """σ_l = κ · RMS of (θ_l − θ_base,l) over all elements of block l (of θ_l itself when base is None)."""
    return {layer: sigma_of(sums, kappa) for layer, sums in block_sq_sums(theta, base, layout).items()}


def unprotected_sigma(theta, base, kappa: float) -> float:
    """Same formula over the tensors outside every block (embeddings, final norm, lm_head)."""
    return sigma_of(_sq_sum_count(((n, theta[n]) for n in theta if block_of(n) is None), base), kappa)


def gaussian(shape, sigma: float, seed: int) -> torch.Tensor:
    """N(0, σ²) fp32 noise, a deterministic function of (shape, σ, seed). One generator stream per tensor:
    filling blocks from several threads was measured at ~1.2x on 2 cores, not worth its machinery."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.empty(tuple(shape), dtype=torch.float32).normal_(0.0, sigma, generator=g)


def _draws(shape, sigma: float, seeds: list[int]) -> list[torch.Tensor]:
    """gaussian() for each seed, in the order of the seeds; the independent streams are drawn side by side on up
    to `streaming.worker_threads()` threads (each stream is the same whichever thread draws it)."""
    workers = min(len(seeds), worker_threads())
    if workers <= 1:
        return [gaussian(shape, sigma, seed) for seed in seeds]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda seed: gaussian(shape, sigma, seed), seeds))


class ZeroSumNoise:
    """ε⁰_k = sqrt(m/(m−1))·(z_k − mean_j z_j), z_k ~ N(0, σ²) drawn from copy k's own seed.

    Any one copy is regenerated on its own from its seed and the mean, so a caller producing the copies one at
    a time holds the mean plus one copy, whatever m is; each z_k is drawn twice (once for the mean). keep: hold
    the m draws made for the mean (when they take at most KEEP_ELEMENTS) and hand each out once instead of
    drawing it again — for a caller that builds every copy of the tensor once, one after another.

    common: (σ_c, seed) adds c ~ N(0, σ_c²), the same in every copy and not scaled by α, which the harmonic
    aggregate does not cancel (None: no common part)."""

    KEEP_ELEMENTS = 1 << 27  # m draws of one tensor kept: at most 512 MiB of fp32

    def __init__(self, shape, sigma: float, seeds: list[int], keep: bool = False,
                 common: tuple[float, int] | None = None):
        if len(seeds) < 2:
            raise ValueError(f"zero-sum noise needs m >= 2 copies, got m={len(seeds)}")
        self.shape, self.sigma, self.seeds = tuple(shape), float(sigma), list(seeds)
        self.common = common
        self._scale = math.sqrt(len(seeds) / (len(seeds) - 1))
        self._mean = torch.zeros(self.shape, dtype=torch.float32)
        keep = keep and len(seeds) * self._mean.numel() <= self.KEEP_ELEMENTS
        self._kept: list[torch.Tensor | None] = [None] * len(seeds)
        if keep:  # all m draws are held anyway: drawn side by side, then summed in copy order a slice at a time
            self._kept = _draws(self.shape, self.sigma, self.seeds)
            mean, kept = self._mean.reshape(-1), [z.reshape(-1) for z in self._kept]
            for a in range(0, mean.numel(), _SLICE):
                part = mean[a : a + _SLICE]
                for z in kept:
                    part.add_(z[a : a + _SLICE])
                part.div_(len(seeds))
        else:
            for seed in self.seeds:
                self._mean.add_(self._z(seed))
            self._mean.div_(len(seeds))

    def __len__(self) -> int:
        return len(self.seeds)

    def _z(self, seed: int) -> torch.Tensor:
        return gaussian(self.shape, self.sigma, seed)

    def copy(self, k: int, scale: float = 1.0, plus: torch.Tensor | None = None) -> torch.Tensor:
        """scale·ε⁰_k (+ the common part) (+ plus) as a fresh fp32 tensor (scale: the copy's α, folded into the one
        multiplication; plus: added last, the same as `.add_(plus)` on the result)."""
        if plus is not None and plus.device != self._mean.device:
            return self.copy(k, scale).to(plus.device).add_(plus)
        z, self._kept[k] = self._kept[k], None  # a kept draw is handed out once, then drawn again if asked for
        if z is None:
            z = self._z(self.seeds[k])
        common = None if self.common is None else gaussian(self.shape, *self.common).reshape(-1)
        added = None if plus is None else plus.reshape(-1)
        out, mean, c = z.reshape(-1), self._mean.reshape(-1), self._scale * scale
        for a in range(0, out.numel(), _SLICE):  # every step on a slice while it is in the core's cache
            part = out[a : a + _SLICE].sub_(mean[a : a + _SLICE]).mul_(c)
            if common is not None:
                part.add_(common[a : a + _SLICE])
            if added is not None:
                part.add_(added[a : a + _SLICE])
        return z


class IndependentNoise:
    """The noised baseline's single copy: ε ~ N(0, σ²) from one seed (no zero-sum; `copy`'s scale is the copy's
    α, 1 unless server.noised_alpha says otherwise)."""

    def __init__(self, shape, sigma: float, seed: int):
        self.shape, self.sigma, self.seed = tuple(shape), float(sigma), seed

    def __len__(self) -> int:
        return 1

    def copy(self, k: int, scale: float = 1.0, plus: torch.Tensor | None = None) -> torch.Tensor:
        """As `ZeroSumNoise.copy`: the copy's noise (+ plus), a fresh fp32 tensor."""
        if k != 0:
            raise IndexError(f"independent noise has one copy, asked for copy {k}")
        out = gaussian(self.shape, self.sigma * scale, self.seed)
        return out if plus is None else out.to(plus.device).add_(plus)


def zero_sum_noise(shape, sigma: float, seeds: list[int]) -> list[torch.Tensor]:
    """All m copies of `ZeroSumNoise` at once: they sum to 0 and each has per-element variance σ²."""
    noise = ZeroSumNoise(shape, sigma, seeds)
    return [noise.copy(k) for k in range(len(noise))]


def alpha_schedule(m: int, kind: str = "linear", generator: torch.Generator | None = None) -> list[float]:
    """Per-copy scalings α_k ≥ 1, distinct.

    linear: 1 + (k−1)/(m−1) (the reference code); pow2: 2^(k−1) (its older version);
    random: α_1 = 1, the others 1 + U(0, 1) drawn from `generator` (α secret, not a public schedule).
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if kind == "linear":
        return [1.0] if m == 1 else [1.0 + k / (m - 1) for k in range(m)]
    if kind == "pow2":
        return [float(2**k) for k in range(m)]
    if kind == "random":
        if generator is None:
            raise ValueError("alpha_schedule='random' needs a generator")
        draws = torch.rand(m - 1, generator=generator, dtype=torch.float64).sort().values
        return [1.0] + [1.0 + float(u) for u in draws]
    raise ValueError(f"alpha_schedule={kind!r} is not one of {', '.join(ALPHA_SCHEDULES)}")
