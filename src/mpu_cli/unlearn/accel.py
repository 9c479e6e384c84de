"""The client loop for large models: the loop of unlearn/loop.py, run under `accelerate`.

Used when `client.accelerate_config=<name>` (or `accelerate=<name>`: a shipped config in accelerate_configs/,
or a path to an accelerate config file) or `client.mixed_precision` is set; with neither, the plain loop in client.py runs unchanged.

- One process (a plain `mpu-run`): the Accelerator places the model on the local device (the GPU if there is
  one) and applies the mixed precision of the config (or `client.mixed_precision`). Multi-process settings of
  the config (num_processes, FSDP, DeepSpeed) need the processes that `accelerate launch` starts, so they are
  only reported here.
- Started by `accelerate launch --config_file <config> ...` (see `launch_command`): the Accelerator takes the
  distributed setting from the launcher's environment; without a GPU the processes run on the CPU over gloo
  (accelerate's MULTI_CPU: data parallel; an FSDP / DeepSpeed config, which accelerate applies on GPUs only, is
  refused rather than silently replicated). Each micro-batch is split across the processes (a
  process with no item of it runs a zero-weighted forward so every rank joins the collectives), gradients
  are synchronised once per optimizer step, and `accelerator.get_state_dict` gathers the full state before
  the copy is returned (on the main process; others get {}).
- bf16 training on GPU: `model.dtype=bfloat16` (pure bf16 weights) or `client.mixed_precision=bf16` (fp32
  weights, bf16 autocast). The server's arithmetic stays fp32 either way: the copy is returned as fp32.
- `client.gradient_checkpointing=true` recomputes activations in backward (`gradient_checkpointing`
  context below; also used by the plain loop): same update, less activation memory.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from mpu_cli.unlearn.loop import new_optimizer, train_epochs
from mpu_cli.unlearn.settings import MIXED_PRECISION

CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"  # in accelerate's own format

SHARDED = ("FSDP", "DEEPSPEED")  # accelerate's distributed types that shard the model across processes
_cached: dict = {}  # the process's Accelerator: accelerate's state is a per-process singleton


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name: str) -> Path:
    """A shipped config name (ddp, fsdp, deepspeed_zero3) or the path of an accelerate config file."""
    p = CONFIG_DIR / f"{name}.yaml"
    if p.is_file():
        return p
    q = Path(str(name)).expanduser()
    if q.is_file():
        return q
    raise ValueError(f"client.accelerate_config={name!r} is not one of {shipped_configs()} "
                     "nor an existing accelerate config file")


def load_config(name: str) -> dict:
    """The config file as accelerate itself reads it (unknown top-level keys are an error there too)."""
    from accelerate.commands.config.config_args import ClusterConfig

    cluster = ClusterConfig.from_yaml_file(str(resolve_config(name)))
    d = cluster.to_dict()
    d["distributed_type"] = str(getattr(cluster.distributed_type, "value", cluster.distributed_type))
    return d


def launch_command(name: str) -> list[str]:
    """The prefix that starts a program under this config's processes: `accelerate launch --config_file ...`."""
    return ["accelerate", "launch", "--config_file", str(resolve_config(name))]


def wanted(cfg) -> bool:
    """True when the accelerated loop should run instead of the plain one."""
    return bool(getattr(cfg, "accelerate_config", None)) or getattr(cfg, "mixed_precision", None) is not None


def launched() -> bool:
    """True inside a process started by `accelerate launch` (or torchrun) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """False only in the second and later processes of an `accelerate launch` (they return no copy themselves)."""
    return int(os.environ.get("RANK", "0")) == 0


def get_accelerator(config: str | None = None, mixed_precision: str | None = None, cpu: bool = False):
    """The process's Accelerator for these settings (created once; recreated if the settings change)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    file_cfg = load_config(config) if config else {}
    mp = mixed_precision if mixed_precision is not None else (file_cfg.get("mixed_precision") or "no")
    if mp not in MIXED_PRECISION:
        raise ValueError(f"client.mixed_precision={mp!r} is not one of {list(MIXED_PRECISION)}")
    if mp != "no" and not cpu and not torch.cuda.is_available():
        cpu = True  # bf16 autocast works on CPU; fp16 does not, accelerate says so itself
    if launched() and not torch.cuda.is_available():
        cpu = True  # several processes without a GPU: accelerate's MULTI_CPU over gloo (else each runs alone)
    key = (config, mp, cpu)
    if _cached.get("key") == key:
        return _cached["accelerator"]
    if _cached:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    acc = Accelerator(mixed_precision=mp, cpu=cpu)
    asked = file_cfg.get("distributed_type")
    if launched() and asked in SHARDED and acc.distributed_type.value != asked:
        # accelerate shards only on accelerator devices; on CPUs it would silently replicate the model instead
        raise ValueError(f"client.accelerate_config={config} asks for {asked}, but accelerate set these "
                         f"{acc.num_processes} processes up as {acc.distributed_type.value} (no GPU: accelerate runs "
                         f"{asked} on GPUs only); accepted here: a data-parallel config such as ddp")
    if config and not launched() and int(file_cfg.get("num_processes") or 1) > 1:
        import logging

        logging.getLogger(__name__).warning(
            "client.accelerate_config=%s asks for %s processes (%s); this client runs in one process. Start it "
            "with `%s ...` to use them.", config, file_cfg.get("num_processes"), file_cfg.get("distributed_type"),
            " ".join(launch_command(config)))
    _cached.update(key=key, accelerator=acc)
    return acc


@contextmanager
def gradient_checkpointing(model, on: bool):
    """Enable HF gradient checkpointing for the duration (non-reentrant: exact same gradients)."""
    if not on:
        yield
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"client.gradient_checkpointing=true: {type(model).__name__} does not support it")
    use_cache = getattr(model.config, "use_cache", None)
    # transformers >= 5 names it activation checkpointing (the old name still works there, deprecated)
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        disable = model.activation_checkpointing_disable
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        disable = model.gradient_checkpointing_disable
    model.config.use_cache = False
    try:
        yield
    finally:
        disable()
        if use_cache is not None:
            model.config.use_cache = use_cache


class AcceleratedEngine:
    """The loop's engine under accelerate. With several processes each micro-batch is split across them (a
    process with no item of it runs a zero-weighted forward so every rank joins the collectives) and gradients
    are synchronised once per optimizer step."""

    def __init__(self, acc, wrapped):
        from accelerate.utils import DistributedType

        self.acc, self.wrapped = acc, wrapped
        self.device, self.is_main = acc.device, acc.is_main_process
        self.n_proc, self.rank = acc.num_processes, acc.process_index
        self.sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def share(self, pairs: list, n_group: int) -> tuple[list, float]:
        mine = pairs[self.rank :: self.n_proc] if self.n_proc > 1 else pairs
        weight = len(mine) / n_group
        if self.n_proc > 1:  # the processes' gradients are averaged: undo the mean
            weight = weight * self.n_proc
        if not mine:  # still join the forward/backward collectives, contributing nothing
            mine, weight = pairs[:1], 0.0
        return mine, weight

    def accumulating(self, last: bool):
        self.acc.sync_gradients = last  # DeepSpeed: reduce and step only at the group's end
        return nullcontext() if last or self.sharded else self.acc.no_sync(self.wrapped)

    def backward(self, loss) -> None:
        self.acc.backward(loss)

    def clip(self, max_norm: float) -> None:
        self.acc.clip_grad_norm_(self.wrapped.parameters(), max_norm)


def train_accelerated(model, algorithm, data, cfg, pad: int, ref, desc: str) -> dict[str, torch.Tensor]:
    """The loop of unlearn/loop.py under accelerate; returns the full updated state (fp32, CPU) of the copy."""
    from accelerate.utils import DistributedType

    acc = get_accelerator(getattr(cfg, "accelerate_config", None), getattr(cfg, "mixed_precision", None))
    dist = acc.distributed_type
    if ref is not None:
        ref.to(acc.device)

    saved_forward = model.__dict__.get("forward")  # prepare() patches model.forward (autocast): restored below
    if dist == DistributedType.DEEPSPEED:  # the engine is built from model and optimizer together
        wrapped, opt = acc.prepare(model, new_optimizer(model, cfg))
    else:  # FSDP replaces the parameters: build the optimizer on the prepared model
        wrapped = acc.prepare(model)
        opt = acc.prepare(new_optimizer(wrapped, cfg))
    wrapped.train()
    try:
        train_epochs(wrapped, algorithm, data, cfg, pad, ref, desc, opt, AcceleratedEngine(acc, wrapped))
    finally:
        acc.sync_gradients = True
    wrapped.eval()
    state = acc.get_state_dict(wrapped)  # FSDP / ZeRO-3: gathers the shards (full state on the main process)
    out = {k: v.detach().to("cpu", torch.float32).clone() for k, v in (state or {}).items()}
    if dist not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # tied duplicates (embed / lm_head) may be dropped by get_state_dict: the caller expects every name
        for k, v in acc.unwrap_model(wrapped).state_dict().items():
            out.setdefault(k, v.detach().to("cpu", torch.float32).clone())
    for attr in ("_original_forward", "_is_accelerate_prepared"):  # the next copy is prepared afresh
        model.__dict__.pop(attr, None)
    if saved_forward is None:
        model.__dict__.pop("forward", None)
    else:
        model.forward = saved_forward
    acc.free_memory()  # drop accelerate's references to the wrapped model and optimizer
    return out
