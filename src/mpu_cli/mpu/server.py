"""The MPU server: rounds of Pre-Process (publish) and Post-Process (aggregate).

Secrets (seeds, α, σ, transforms) live only in one `_RoundSecrets` object; published copies are plain dicts.
The server never holds the published copies, the m noise tensors nor the m updates: every copy is a
deterministic function of (θ_{r-1}, round secrets) and each copy's noise has its own seed, so a copy (or one
tensor of it) is regenerated alone, and aggregate() streams Σ w_k Δ_k tensor by tensor, copy by copy.

θ is either in memory (a state dict, copied to fp32) or read from safetensors files one tensor at a time
(`models.files.TensorFiles`: the target's folder, then each θ_r the server wrote). Streaming, a round holds one
tensor at a time: `write_copies` writes the m copies side by side, tensor by tensor, and aggregate(out=…) writes
θ_r tensor by tensor from lazily read returned copies; server memory is then a few tensors, whatever the model
size and m. Post-Process reads the copies write_copies wrote back from their files, each hashed as it is read
against the digest recorded when it was written, instead of building them again (a changed or missing file is
not used: the copies are then built again from the secrets, with the same result). Handing out whole copies one
at a time (`publish_copies` indexed) keeps the zero-sum means for the round (one model size).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from mpu_cli.finite import check_tensor
from mpu_cli.models.family import block_of
from mpu_cli.models.files import TensorFiles, open_file

from .aggregate import UpdateAccumulator, harmonic_weights
from .arms import arm_of
from .layout import ModelLayout
from .noise import (
    IndependentNoise,
    ZeroSumNoise,
    alpha_schedule,
    block_sq_sums,
    sigma_of,
    unprotected_sigma,
)
from .reparam import Transform, apply_transform, invert_transform, moves_only, sample_transform
from .settings import ServerConfig
from .streaming import in_streaming_pass

log = logging.getLogger(__name__)
_ROW_SLICE_ELEMENTS = 1 << 22  # a tensor aggregated by rows: elements per slice


def published_dtype(model_dtype: torch.dtype, publish_dtype: str) -> torch.dtype:
    """The dtype a tensor of `model_dtype` is published in under server.publish_dtype."""
    return torch.float32 if publish_dtype == "float32" else model_dtype


def _derive_seed(root: int, *parts) -> int:
    """63-bit seed from (root, parts): independent streams per round / purpose / copy / tensor."""
    digest = hashlib.blake2b(repr((root, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass(repr=False)  # repr=False: an accidental log line must not print secrets
class _RoundSecrets:
    round: int
    round_seed: int
    noise_reference: str
    alphas: list[float]
    weights: list[float]
    sigmas: dict[int, float] = field(default_factory=dict)
    sigma_unprotected: float = 0.0
    references: dict = field(default_factory=dict)  # block -> Σ(θ − θ_base)² of σ's pass (the survival reference)
    transforms: list[Transform] = field(default_factory=list)
    noise_cache: dict = field(default_factory=dict)  # canonical name -> zero-sum noise (publish_copies only)
    survival: dict | None = None  # the noise survival record, measured while write_copies wrote the copies
    published_files: list = field(default_factory=list)  # [(path, sha256)] of the copies write_copies wrote


class MPUServer:
    def __init__(self, theta, layout: ModelLayout, cfg: ServerConfig, base=None):
        """theta: a state dict, or `TensorFiles` read one tensor at a time (so is base: an fp32 mapping, or None)."""
        cfg.validate()
        lazy = isinstance(theta, TensorFiles)
        shapes = {n: theta.shape(n) if lazy else tuple(t.shape) for n, t in _entries(theta)}
        dtypes = {n: theta.dtype(n) if lazy else t.dtype for n, t in _entries(theta)}
        for name, dtype in dtypes.items():
            if not dtype.is_floating_point:
                raise ValueError(
                    f"tensor {name!r} has dtype {dtype}; the server handles floating-point tensors only"
                )
        layout.family.check_names(theta)  # no block tensor is ever published without a declared role
        self._layout = layout
        self._cfg = cfg
        self._arm = arm_of(cfg.arm)
        self._base = base
        self._shapes = shapes
        self._dtypes = {n: published_dtype(d, cfg.publish_dtype) for n, d in dtypes.items()}  # as published
        self._canonical = {n: n for n in theta} if lazy else _alias_map(theta)
        # The exact model: private, fp32, never aliasing the caller's tensors (read as fp32 when lazy).
        self._theta = theta.then(torch.float32) if lazy else {
            n: t.detach().to(torch.float32, copy=True) for n, t in theta.items()}
        self._theta_file: dict | None = None  # {'path', 'sha256', 'bytes'} of θ once aggregate wrote it
        self._round = 0
        self._secrets: _RoundSecrets | None = None
        self._pending = False  # published but not yet aggregated
        self._noise_reference = "base" if cfg.noise_reference == "base" and base is not None else "raw"

    # ---- public surface -------------------------------------------------------------------------------------

    @property
    def theta(self):
        """Current exact θ (fp32): a dict, or a lazily read mapping. Do not modify the tensors in place."""
        return self._theta if isinstance(self._theta, TensorFiles) else dict(self._theta)

    @property
    def theta_file(self) -> dict | None:
        """{'path', 'sha256', 'bytes'} of the file θ was last written to by aggregate(out=…), else None."""
        return None if self._theta_file is None else dict(self._theta_file)

    @property
    def n_copies(self) -> int:
        return self._arm.copies(self._cfg.m)

    @property
    def layout(self) -> ModelLayout:
        """The public architecture facts the reparameterization follows."""
        return self._layout

    @property
    def base(self) -> dict | None:
        """The public base (fp32 state dict) the noise scales are measured from, or None."""
        return self._base

    @property
    def noise_reference(self) -> str:
        """Effective reference: 'base' only when asked for and a base model was given."""
        return self._noise_reference

    def publish(self) -> list[dict]:
        """Start round r+1: the public copies θ_pub^(k), each tensor in its original dtype, all m at once
        (the caller's memory: m models; `publish_copies` hands them out one at a time)."""
        return list(self.publish_copies())

    def publish_copies(self) -> PublishedCopies:
        """Start round r+1 now; the copies are built when indexed, one whole copy at a time."""
        self._start_round()
        return PublishedCopies(self, self._round)

    def pending_copies(self) -> PublishedCopies:
        """The copies of the pending round once more, identical to what publish() returned (they derive from
        θ_{r-1} and the round's secrets): a resumed run hands them to the client again."""
        if not self._pending:
            raise RuntimeError("no published round is pending; call publish()")
        return PublishedCopies(self, self._round)

    @in_streaming_pass
    def write_copies(self, paths: list) -> list[dict]:
        """The pending round's m copies written side by side to `paths`, tensor by tensor (each file atomically,
        appearing on success only); returns each file's {'sha256', 'bytes'}. Measures the noise survival
        record (`noise_survival`) on the way. Memory: one tensor of θ, its zero-sum draws and one version."""
        from mpu_cli.transport.exchange import StreamingSafetensorsWriter

        from .survival import SurvivalMeter

        if not self._pending:
            raise RuntimeError("no published round is pending; call publish_copies()")
        if len(paths) != self.n_copies:
            raise ValueError(f"{len(paths)} paths for {self.n_copies} copies")
        meter = SurvivalMeter(self.n_copies, self._secrets.references)
        writer = StreamingSafetensorsWriter(paths, self.published_spec())
        try:
            for name in self._theta:
                writer.write(name, self._measured_versions(name, meter))
            infos = writer.commit()
        except BaseException:
            writer.abort()
            raise
        self._secrets.survival = self._survival_record(meter)
        self._secrets.published_files = [(p, info["sha256"]) for p, info in zip(paths, infos)]
        return infos

    def _start_round(self) -> None:
        if self._pending:
            # Fresh noise on the same θ would let a client average the noise away.
            raise RuntimeError(
                f"round {self._round} was published but not aggregated; call aggregate() first"
            )
        self._round += 1
        self._secrets = self._new_secrets()
        self._pending = True

    def published_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """name -> (shape, dtype) of every published tensor (public: the architecture and training dtype)."""
        return {n: (tuple(self._shapes[n]), self._dtypes[n]) for n in self._theta}

    @property
    def round(self) -> int:
        return self._round

    @property
    def pending(self) -> bool:
        """True between publish() and aggregate()."""
        return self._pending

    def export_state(self) -> tuple[dict, dict]:
        """(θ fp32, private metadata) from which `restore` rebuilds this server exactly, pending round included.

        The metadata holds the current round's seed (α, the noise streams and the transforms derive from it) and
        its σ, so it is as secret as θ: store it server-side only."""
        s = self._secrets
        meta = {
            "round": self._round,
            "pending": self._pending,
            "round_seed": s.round_seed if s is not None else None,
            "sigmas": [dict(s.sigmas), s.sigma_unprotected] if s is not None else None,
            "noise_reference": self.noise_reference,
            "dtypes": dict(self._dtypes),
            "aliases": dict(self._canonical),
            "config": dict(self._cfg.__dict__),
        }
        return self.theta, meta

    @classmethod
    def restore(cls, theta: dict, meta: dict, layout: ModelLayout, base: dict | None = None) -> MPUServer:
        """Inverse of `export_state` (theta: the exported fp32 θ). base: the same public base as before; it may be
        omitted to aggregate a pending round whose σ are in meta["sigmas"] (only publishing needs the base)."""
        server = cls(theta, layout, ServerConfig(**meta["config"]), base=base)
        server._noise_reference = meta.get("noise_reference", server._noise_reference)
        if set(meta["dtypes"]) != set(server._theta) or set(meta["aliases"]) != set(server._theta):
            raise ValueError("server state: tensor names in the metadata do not match θ")
        server._dtypes = dict(meta["dtypes"])
        server._canonical = dict(meta["aliases"])
        server._round = int(meta["round"])
        if meta["pending"]:
            sigmas = meta.get("sigmas")
            if sigmas is None and base is None and server._noise_reference == "base":
                raise ValueError("restoring a pending round with noise_reference=base needs the base or the sigmas")
            server._secrets = server._new_secrets(int(meta["round_seed"]), sigmas)
            server._pending = True
        return server

    @in_streaming_pass
    def aggregate(self, returned: list, out=None, published: list | None = None):
        """θ ← θ + η Σ_k w_k T_k⁻¹(returned_k − pub_k), tensor by tensor (returned copies may be read lazily);
        returns the new θ (fp32). out: write θ_r there, tensor by tensor (atomically), and read θ from that file
        from now on (`theta_file`); None: keep θ in memory. A refused aggregate leaves the server at θ_{r-1}.

        pub_k is read back from the file the round's copy k was written to, hashed as it is read — the files
        `write_copies` wrote, or `published` [(path, sha256)] for a server restored after publishing — which is
        cheaper than building the copies again from the secrets. A file that is missing or no longer hashes to
        its record is not used: the aggregate is then redone from copies built again (the same numbers)."""
        if not self._pending:
            raise RuntimeError("aggregate() called without a published round; call publish() first")
        returned = list(returned)
        self._check_returned(returned)
        files = self._secrets.published_files if published is None else published
        if files and len(files) == self.n_copies:
            reader = _PublishedFiles(files)
            try:
                return self._end_round(self._aggregated(returned, reader), out)
            except _PublishedChanged as e:
                log.warning("round %d: the file of published copy %d is not as it was written; the copies are "
                            "built again from the round's secrets", self._round, e.copy + 1)
            finally:
                reader.close()
        return self._end_round(self._aggregated(returned), out)

    def _end_round(self, tensors, out):
        """θ_r from (name, tensor) pairs, kept or written to `out` as they come; the round ends only once all
        are in (an exception on the way leaves θ_{r-1} and no file)."""
        sink = _ThetaSink(out, {n: (self._shapes[n], torch.float32) for n in self._theta})
        try:
            for name, new in tensors:
                sink.add(name, new)
            theta, self._theta_file = sink.commit()
        except BaseException:
            sink.abort()
            raise
        self._theta = theta
        self._secrets.noise_cache.clear()
        self._pending = False
        return self.theta

    def _aggregated(self, returned: list, published: _PublishedFiles | None = None):
        """(name, θ_r[name]) one tensor at a time, each checked before it is handed on. published: read pub_k
        from there (its files are verified after the last tensor, before θ_r can be committed)."""
        from mpu_cli.faults import scoped_kill_point

        where = f"round {self._round}"
        if not self._arm.noisy and self._cfg.eta == 1.0:
            # θ + (θ̃ − θ) can differ from θ̃ in the last bit; the clean baseline must equal plain unlearning.
            for name in self._theta:
                new = returned[0][name].detach().to(torch.float32, copy=True)
                check_tensor(name, new, f"{where}, returned copy 1", "the returned weight")
                yield name, new
            return
        half = len(self._theta) // 2
        for i, name in enumerate(self._theta):
            if i == half:
                scoped_kill_point("mid_aggregate")  # fault-injection tests only (MPU_KILL_AT)
            if self._published_exactly(name) and self._shapes[name]:
                if published is not None:
                    published.skip(name)
                new = self._aggregated_by_rows(name, returned, where)
            else:
                x = self._theta[name]
                versions = self._published_tensors(name, x) if published is None else published.versions(name)
                new = self._combined(name, x, versions, lambda k, n=name: returned[k][n], returned, where)
                del x
            check_tensor(name, new, where, "the aggregated weight")
            yield name, new
        if published is not None:
            published.verify()

    def _aggregated_by_rows(self, name: str, returned: list, where: str) -> torch.Tensor:
        """θ_r[name] of a tensor every copy received as θ's own (cast): its update is elementwise, so it is formed
        a slice of rows at a time, each read alone from θ and the returned copies (the same numbers as the whole
        tensor at once). Memory: θ_r's tensor and one slice of each input, however large the tensor (an
        embedding or a tied LM head)."""
        shape = self._shapes[name]
        new = torch.empty(shape, dtype=torch.float32)
        step = max(1, _ROW_SLICE_ELEMENTS // max(1, math.prod(shape[1:])))
        for a in range(0, shape[0], step):
            b = min(shape[0], a + step)
            x = _rows(self._theta, name, a, b)
            versions = [x.to(self._dtypes[name])] * self.n_copies
            self._combined(name, x, versions, lambda k, a=a, b=b: _rows(returned[k], name, a, b), returned, where,
                           out=new[a:b])
        return new

    def _combined(self, name: str, x: torch.Tensor, versions, got, returned: list, where: str,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """x + η Σ_k w_k T_k⁻¹(got(k) − pub_k) for one tensor (or a slice of its rows, which no T_k changes):
        versions gives pub_k in turn; written into `out` when given, else into the sum's own tensor."""
        s = self._secrets
        acc = UpdateAccumulator()
        for k, pub in enumerate(versions):
            g = got(k)
            check_tensor(name, g, f"{where}, returned copy {k + 1}", "the returned weight")
            d = g.to(x.device, torch.float32)
            if d is g and not hasattr(returned[k], "shape"):
                d = d.clone()  # a state dict's tensor is the caller's; a lazily read one is a fresh read
            delta = {name: d.sub_(pub)}  # Δ'_k (pub's dtype is exactly widened to fp32)
            del pub, g, d
            if self._arm.reparameterized:
                delta = invert_transform(delta, self._layout, s.transforms[k])  # Δ_k
            acc.add(delta, s.weights[k], own=True)
            del delta
        new = acc.result()[name]
        return torch.add(x, new, alpha=self._cfg.eta, out=new if out is None else out)  # θ_{r-1} stays as it is

    @in_streaming_pass
    def merge(self, update: Mapping[str, torch.Tensor], out=None) -> dict:
        """End the pending round with an aggregate Σ_k w_k T_k⁻¹(Δ_k) formed outside `aggregate`, in exact
        coordinates (a LoRA round: mpu/lora_aggregate.py): θ_r = θ + η·update[name] for each of its names, the
        other tensors as they are. `update` may build each tensor when read (then only one is in memory). out: as
        in `aggregate`, θ_r written there tensor by tensor (θ may be a read-only file). Every sum is checked
        finite before θ changes, so a refused merge leaves the server at θ_{r-1}. Returns the new θ (fp32)."""
        if not self._pending:
            raise RuntimeError("merge() called without a published round; call publish() first")
        names = set(update)  # by iteration: a Mapping's `in` would build the tensor
        unknown = [n for n in update if n not in self._theta]
        if unknown:
            raise ValueError(f"round {self._round}: the aggregate names {unknown[0]!r}, which is not a tensor of θ")
        return self._end_round(self._merged(update, names), out)

    def _merged(self, update: Mapping[str, torch.Tensor], names: set):
        """(name, θ_r[name]) one tensor at a time: θ + η·update where `names` has it, θ's own tensor elsewhere."""
        for name in self._theta:
            x = self._theta[name]
            if name in names:
                x = torch.add(x, update[name].to(x.device), alpha=self._cfg.eta)
                check_tensor(name, x, f"round {self._round}", "the aggregated weight")
            yield name, x

    def public_info(self) -> dict:
        """JSON-able facts about the run that reveal no secret."""
        return {
            "round": self._round,
            "arm": self._cfg.arm,
            "m": self.n_copies,
            "kappa": self._cfg.kappa,
            "noise_reference": self.noise_reference,
            "perturb_unprotected": self._cfg.perturb_unprotected,
            "exposed_fraction": self.exposed_fraction(),
            "seed_recorded": self._cfg.seed is not None,
        }

    def private_state(self) -> dict:
        """Secrets of the current round; {} before the first publish. Never send this to a client."""
        s = self._secrets
        if s is None:
            return {}
        return {
            "round": s.round,
            "seed": self._cfg.seed,
            "round_seed": s.round_seed,
            "noise_reference": s.noise_reference,
            "alphas": list(s.alphas),
            "weights": list(s.weights),
            "sigmas": dict(s.sigmas),
            "sigma_unprotected": s.sigma_unprotected,
            "transforms": list(s.transforms),
        }

    @in_streaming_pass
    def noise_survival(self) -> dict:
        """How much of the pending round's noise survives publication in the published dtype (mpu/survival.py),
        per copy and block; the copies are rebuilt one tensor at a time. Private: it involves θ and α."""
        from .survival import SurvivalMeter

        if not self._pending:
            raise RuntimeError("no published round is pending; call publish()")
        if self._secrets.survival is not None:  # measured while write_copies wrote the copies
            return self._secrets.survival
        meter = SurvivalMeter(self.n_copies, self._secrets.references)
        for name in self._theta:
            x = self._theta[name]
            group = self._survival_group(name, x, meter)
            if group is None:
                continue
            noise = self._noise_source(name)
            for k in range(self.n_copies):
                self._published_tensor(name, k, noise, x, measure=partial(meter.add, k, group))
        return self._survival_record(meter)

    def _measured_versions(self, name: str, meter):
        """θ_pub^(k)[name] for k = 1..m, one at a time, each measured into the survival `meter` first."""
        x = self._theta[name]
        group = self._survival_group(name, x, meter)
        measure = None if group is None else lambda k, p, e: meter.add(k, group, p, e)
        for pub in self._published_tensors(name, x, measure):
            yield pub
            del pub  # before the next version is built

    def _sigma(self, name: str) -> float:
        """The noise scale of one tensor this round (0: published without noise)."""
        if not self._arm.noisy:
            return 0.0
        layer = block_of(name)
        return self._secrets.sigma_unprotected if layer is None else self._secrets.sigmas.get(layer, 0.0)

    def _published_exactly(self, name: str) -> bool:
        """Every copy of this tensor is θ's own, in the published dtype: no noise and outside every block."""
        return block_of(name) is None and self._sigma(name) == 0.0

    def _survival_group(self, name: str, x: torch.Tensor, meter) -> object | None:
        """The survival group of a measured tensor, its σ reference added to `meter`; None: not measured."""
        from .survival import UNPROTECTED

        layer = block_of(name)
        if self._canonical[name] != name or (layer is None and not self._cfg.perturb_unprotected):
            return None  # a tied tensor counts once; unprotected tensors are published exactly
        group = UNPROTECTED if layer is None else layer
        if meter.needs_reference(group):
            ref = self._base if self.noise_reference == "base" else None
            meter.add_reference(group, x, None if ref is None else ref[name])
        return group

    def _exact(self, name: str, x: torch.Tensor, k: int) -> torch.Tensor:
        """Copy k's tensor without noise, T_k(θ)[name], fp32."""
        return apply_transform({name: x}, self._layout, self._secrets.transforms[k])[name]

    def _survival_record(self, meter) -> dict:
        s = self._secrets
        return meter.result(self._round, self._arm.effective_kappa(self._cfg.kappa), s.alphas)

    def exposed_fraction(self) -> float:
        """Fraction of (unique) parameters published without noise."""
        if not self._arm.noisy or self._cfg.kappa == 0:
            return 1.0
        unique = {self._canonical[n]: math.prod(shape) for n, shape in self._shapes.items()}
        total = sum(unique.values())
        if self._cfg.perturb_unprotected:
            return 0.0
        return sum(numel for n, numel in unique.items() if block_of(n) is None) / total

    # ---- internals ------------------------------------------------------------------------------------------

    @in_streaming_pass
    def _new_secrets(self, round_seed: int | None = None, sigmas: tuple[dict, float] | None = None) -> _RoundSecrets:
        """sigmas: (σ per block, σ of the unprotected tensors) recorded when the round was published; None
        recomputes them from θ_{r-1} (and the base)."""
        cfg, arm, r = self._cfg, self._arm, self._round
        if round_seed is None:
            round_seed = secrets.randbits(63) if cfg.seed is None else _derive_seed(cfg.seed, "round", r)
        ref = self._base if self.noise_reference == "base" else None
        alphas = [1.0]
        if arm.draws_alphas(cfg.noised_alpha):
            alphas = alpha_schedule(cfg.m, cfg.alpha_schedule, _generator(_derive_seed(round_seed, "alpha")))
        alphas = arm.copy_alphas(alphas, cfg.noised_alpha)
        s = _RoundSecrets(r, round_seed, self.noise_reference, alphas, harmonic_weights(alphas))
        if arm.noisy and sigmas is not None:
            s.sigmas, s.sigma_unprotected = {int(k): float(v) for k, v in sigmas[0].items()}, float(sigmas[1])
        elif arm.noisy:
            sums = block_sq_sums(self._theta, ref, self._layout)
            s.sigmas = {layer: sigma_of(v, cfg.kappa) for layer, v in sums.items()}
            tied = {block_of(n) for n in self._theta if self._canonical[n] != n}  # the record counts a tie once
            s.references = {layer: v[0] for layer, v in sums.items() if layer not in tied}
            if cfg.perturb_unprotected:
                s.sigma_unprotected = unprotected_sigma(self._theta, ref, cfg.kappa)
        if arm.reparameterized:
            s.transforms = [
                sample_transform(self._layout, _generator(_derive_seed(round_seed, "transform", k)))
                for k in range(self.n_copies)
            ]
        return s

    def _noise_source(self, name: str, cache: bool = False, keep: bool = False) -> ZeroSumNoise | IndependentNoise | None:
        """The round's fp32 noise of one tensor (before α); each copy's part has its own seed, so it is
        regenerated identically, copy by copy, on every call. cache: keep it for the round (whole copies are
        built name by name, one copy after another). keep: every copy of this tensor is built once, in turn
        (`ZeroSumNoise`'s kept draws)."""
        s = self._secrets
        sigma = self._sigma(name)
        if sigma == 0.0:
            return None
        key = self._canonical[name]  # tied tensors (embed / lm_head) get the same noise
        if key in s.noise_cache:
            return s.noise_cache[key]
        shape = self._shapes[name]
        if not self._arm.zero_sum:
            return IndependentNoise(shape, sigma, _derive_seed(s.round_seed, "noise", key, 0))
        seeds = [_derive_seed(s.round_seed, "noise", key, k) for k in range(self.n_copies)]
        common = None  # server.common_noise: a part all copies share, left in the aggregate (off: no draw)
        if self._cfg.common_noise:
            common = (self._cfg.common_noise * sigma, _derive_seed(s.round_seed, "common", key))
        noise = ZeroSumNoise(shape, sigma, seeds, keep=keep and not cache, common=common)
        if cache:
            s.noise_cache[key] = noise
        return noise

    def _noise(self, name: str) -> list[torch.Tensor] | None:
        """Every copy's noise of one tensor at once (for tests)."""
        noise = self._noise_source(name)
        return None if noise is None else [noise.copy(k) for k in range(len(noise))]

    def _published_tensor(self, name: str, k: int, noise, x: torch.Tensor | None = None,
                          fresh: bool = True, measure=None) -> torch.Tensor:
        """θ_pub^(k)[name] = T_k(θ + α_k ε⁰_k)[name] in the published dtype (x: θ[name] when already read).
        fresh=False: it may be x itself (an unchanged tensor in θ's dtype), for a reader that does not change it.
        measure(published, exact): given the tensor and its noise-free fp32 counterpart, element for element."""
        s = self._secrets
        x = self._theta[name] if x is None else x
        y = x if noise is None else noise.copy(k, scale=s.alphas[k], plus=x)
        t = s.transforms[k] if self._arm.reparameterized else None
        if t is not None and not moves_only(name, self._layout):
            pub = self._cast(name, apply_transform({name: y}, self._layout, t)[name], x, fresh)
            if measure is not None:
                measure(pub, self._exact(name, x, k))
            return pub
        # T_k only moves elements here, so it commutes with the cast: cast first (T_k then moves fewer bytes), and
        # the survival pairs are measured unmoved, against θ itself
        pub = self._cast(name, y, x, fresh)
        if measure is not None:
            measure(pub, x)
        return pub if t is None else apply_transform({name: pub}, self._layout, t)[name]

    def _cast(self, name: str, y: torch.Tensor, x: torch.Tensor, fresh: bool) -> torch.Tensor:
        """y in the published dtype; a copy when it still is θ's own tensor x and fresh: a client training in place
        must never touch θ."""
        same = y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        return y.to(self._dtypes[name], copy=fresh and same)

    def _published_tensors(self, name: str, x: torch.Tensor | None = None, measure=None):
        """θ_pub^(k)[name] for k = 1..m, each built when the iteration reaches it (x: θ[name] when already read),
        for a reader that writes or subtracts it: a version may be x itself. measure(k, published, exact): as in
        `_published_tensor`, for each copy."""
        x = self._theta[name] if x is None else x
        if self._published_exactly(name):  # the same tensor in every copy: cast once
            pub = self._published_tensor(name, 0, None, x, fresh=False)
            for k in range(self.n_copies):
                if measure is not None:
                    measure(k, pub, x)
                yield pub
            return
        noise = self._noise_source(name, keep=True)
        for k in range(self.n_copies):
            yield self._published_tensor(name, k, noise, x, fresh=False,
                                         measure=None if measure is None else partial(measure, k))

    @in_streaming_pass
    def _published_copy(self, k: int, round_: int) -> dict:
        if not self._pending or self._round != round_:
            raise RuntimeError(f"round {round_} is no longer pending (server at round {self._round}); "
                               f"its copies cannot be built any more")
        if not 0 <= k < self.n_copies:
            raise IndexError(f"copy {k} of {self.n_copies}")
        return {name: self._published_tensor(name, k, self._noise_source(name, cache=True))
                for name in self._theta}

    def _check_returned(self, returned: list[dict]) -> None:
        if len(returned) != self.n_copies:
            raise ValueError(
                f"expected {self.n_copies} returned copies for round {self._round}, got {len(returned)}"
            )
        for k, copy in enumerate(returned):
            missing = [n for n in self._theta if n not in copy]
            if missing:
                raise ValueError(f"returned copy {k} lacks {len(missing)} tensors, e.g. {missing[0]!r}")
            for name, expected in self._shapes.items():
                # a lazily read copy (transport.exchange.LazyStateDict) tells shapes without reading the tensors
                shape = tuple(copy.shape(name) if hasattr(copy, "shape") else copy[name].shape)
                if shape != tuple(expected):
                    raise ValueError(f"returned copy {k}: {name!r} has shape {shape}, expected {tuple(expected)}")


def _rows(tensors, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of tensors[name]: read alone from a lazily read file, a view of an in-memory tensor."""
    return tensors.rows(name, start, stop) if hasattr(tensors, "rows") else tensors[name][start:stop]


class _PublishedChanged(Exception):
    """A published copy's file no longer holds what was written (copy: its index)."""

    def __init__(self, copy: int):
        super().__init__(copy)
        self.copy = copy


class _PublishedFiles:
    """The pending round's published copies read back from their files, tensor by tensor, each file hashed as it
    is read (transport.exchange.HashedReader); `_PublishedChanged` when one is not as recorded."""

    def __init__(self, files: list):
        from mpu_cli.transport.exchange import HashedReader

        self._readers = [HashedReader(path, sha256) for path, sha256 in files]

    def versions(self, name: str):
        for k, reader in enumerate(self._readers):
            t = reader.read(name)
            if t is None:
                raise _PublishedChanged(k)
            yield t

    def skip(self, name: str) -> None:
        """The tensor hashed in every file but not kept (the caller builds it itself)."""
        for k, reader in enumerate(self._readers):
            if not reader.skip(name):
                raise _PublishedChanged(k)

    def verify(self) -> None:
        for k, reader in enumerate(self._readers):
            if not reader.verified():
                raise _PublishedChanged(k)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class PublishedCopies(Sequence):
    """The m published copies of a pending round, each built when indexed (from θ_{r-1} and the round's
    secrets), so a caller holding one copy at a time holds one model, whatever m is."""

    def __init__(self, server: MPUServer, round_: int):
        self._server, self._round = server, round_

    def __len__(self) -> int:
        return self._server.n_copies

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._server._published_copy(k, self._round)


def _alias_map(theta: dict) -> dict[str, str]:
    """name -> first name viewing the same memory (tied embeddings appear twice in a state dict)."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, t in theta.items():
        if t.numel() == 0:
            out[name] = name
            continue
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        out[name] = seen.setdefault(key, name)
    return out


def _entries(theta):
    """(name, tensor) of a state dict; (name, None) of lazily read files (nothing is read)."""
    return ((n, None) for n in theta) if isinstance(theta, TensorFiles) else theta.items()


class _ThetaSink:
    """Where aggregate puts θ_r, tensor by tensor: a new in-memory dict, or a safetensors file written as it goes
    (appearing under its name on commit only)."""

    def __init__(self, out, spec: dict):
        from mpu_cli.transport.exchange import StreamingSafetensorsWriter

        self._out = out
        self._tensors: dict = {}
        self._writer = None if out is None else StreamingSafetensorsWriter([out], spec)

    def add(self, name: str, t: torch.Tensor) -> None:
        if self._writer is None:
            self._tensors[name] = t
        else:
            self._writer.write(name, [t])

    def commit(self) -> tuple:
        """(θ_r as the server keeps it, the file's {'path', 'sha256', 'bytes'} or None)."""
        if self._writer is None:
            return self._tensors, None
        info = self._writer.commit()[0]
        return open_file(self._out).then(torch.float32), {"path": str(self._out)} | info

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
