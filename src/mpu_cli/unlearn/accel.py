"""The client loop for large models: the same training step as `client._train`, run under `accelerate`.

Used when `client.accelerate_config=<name>` (or `accelerate=<name>`: a shipped config in accelerate_configs/,
or a path to an accelerate config file) or `client.mixed_precision` is set; with neither, the plain loop in client.py runs unchanged.

- One process (a plain `mpu-run`): the Accelerator places the model on the local device (the GPU if there is
  one) and applies the mixed precision of the config (or `client.mixed_precision`). Multi-process settings of
  the config (num_processes, FSDP, DeepSpeed) need the processes that `accelerate launch` starts, so they are
  only reported here.
- Started by `accelerate launch --config_file <config> ...` (see `launch_command`): the Accelerator takes the
  distributed setting from the launcher's environment. Each micro-batch is split across the processes (a
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
import random
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from mpu_cli.devices import batch_to
from mpu_cli.finite import check_loss
from mpu_cli.progress import tqdm
from mpu_cli.unlearn.settings import MIXED_PRECISION

CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"  # in accelerate's own format

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
    key = (config, mp, cpu)
    if _cached.get("key") == key:
        return _cached["accelerator"]
    if _cached:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    acc = Accelerator(mixed_precision=mp, cpu=cpu)
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


def train_accelerated(model, algorithm, data, cfg, pad: int, ref, desc: str) -> dict[str, torch.Tensor]:
    """`client._train` under accelerate; returns the full updated state (fp32, CPU) of the copy."""
    from accelerate.utils import DistributedType

    from mpu_cli.data.formatting import collate_right
    from mpu_cli.unlearn.batches import epoch_batches

    acc = get_accelerator(getattr(cfg, "accelerate_config", None), getattr(cfg, "mixed_precision", None))
    dist = acc.distributed_type
    forget, retain, idk = data.forget, data.retain, data.idk
    needs_idk = getattr(algorithm, "needs_idk", False)
    if ref is not None:
        ref.to(acc.device)

    def new_optimizer(module):
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    saved_forward = model.__dict__.get("forward")  # prepare() patches model.forward (autocast): restored below
    if dist == DistributedType.DEEPSPEED:  # the engine is built from model and optimizer together
        wrapped, opt = acc.prepare(model, new_optimizer(model))
    else:  # FSDP replaces the parameters: build the optimizer on the prepared model
        wrapped = acc.prepare(model)
        opt = acc.prepare(new_optimizer(wrapped))
    n_proc, rank = acc.num_processes, acc.process_index
    rng = random.Random(cfg.seed)
    wrapped.train()
    try:
        for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False, disable=not acc.is_main_process):
            micro = epoch_batches(len(forget), len(retain), cfg.batch_size, rng)
            for g in range(0, len(micro), cfg.grad_accum):
                group = micro[g : g + cfg.grad_accum]
                n_group = sum(len(b) for b in group)
                opt.zero_grad(set_to_none=True)
                for i, pairs in enumerate(group):
                    last = i == len(group) - 1
                    mine = pairs[rank::n_proc] if n_proc > 1 else pairs
                    weight = len(mine) / n_group
                    if n_proc > 1:  # the processes' gradients are averaged: undo the mean
                        weight = weight * n_proc
                    if not mine:  # still join the forward/backward collectives, contributing nothing
                        mine, weight = pairs[:1], 0.0
                    f = collate_right([forget[j] for j, _ in mine], pad)
                    if needs_idk:
                        f["idk"] = collate_right([idk[j] for j, _ in mine], pad)
                    r = collate_right([retain[k] for _, k in mine], pad) if algorithm.uses_retain else None
                    f, r = batch_to(f, acc.device), batch_to(r, acc.device)
                    acc.sync_gradients = last  # DeepSpeed: reduce and step only at the group's end
                    sync = nullcontext() if last or dist in (DistributedType.FSDP, DistributedType.DEEPSPEED) \
                        else acc.no_sync(wrapped)
                    with sync:
                        loss = algorithm.loss(wrapped, f, r, ref) * weight
                        check_loss(loss, desc)
                        acc.backward(loss)
                acc.clip_grad_norm_(wrapped.parameters(), cfg.max_grad_norm)
                opt.step()
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
