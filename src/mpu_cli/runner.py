"""One run, in process: prepare -> R rounds of (server publish -> client unlearn each copy -> server
aggregate) -> evaluation -> result files. The only module that sees both the server and the client."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from mpu_cli import rundir
from mpu_cli.checkpoint import Checkpoint
from mpu_cli.config import ConfigError
from mpu_cli.data.formatting import ChatFormat, pad_id
from mpu_cli.data.tofu import load_split, split_names
from mpu_cli.devices import pick_device
from mpu_cli.evals.tofu import (
    QUICK_METRICS,
    EvalConfig,
    evaluate,
    load_retain_reference,
    summarize,
    write_eval,
)
from mpu_cli.faults import kill_point, set_scope
from mpu_cli.files import atomic_write_json, atomic_write_text
from mpu_cli.models.io import (
    load_model,
    load_state_into,
    load_tokenizer,
    resolve_dtype,
    resolve_model_path,
    state_dict_fp32,
)
from mpu_cli.models.prepare import Prepared, prepare_models
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.server import MPUServer, ServerConfig
from mpu_cli.parallel_slots import forked_slots, run_in_slots, uses_file_transport
from mpu_cli.unlearn import build_algorithm
from mpu_cli.unlearn.client import ClientConfig, encode_client_data, unlearn_copy

log = logging.getLogger(__name__)

EVAL_VERSION = "2"  # bump when metric code changes: cached evaluations then stop matching
# Cached evaluations are also keyed by the package version and a digest of the evaluation code.
EVAL_MODULES = ("mpu_cli.evals.tofu", "mpu_cli.evals.metrics", "mpu_cli.evals.batched", "mpu_cli.data.formatting",
                "mpu_cli.logprobs")


@dataclass
class RunContext:
    cfg: object
    out: Path
    prepared: Prepared
    tokenizer: object
    fmt: ChatFormat
    dtype: torch.dtype
    device: torch.device | None = None  # evaluation (None: CPU); the client picks its own from client.device


def chat_format(model_cfg) -> ChatFormat:
    return ChatFormat(model_cfg.system_prompt, model_cfg.date_string, model_cfg.max_length)


def eval_data(source: str, split: str) -> dict[str, list[dict]]:
    names = split_names(split)
    return {
        "forget": load_split(source, names["forget_perturbed"]),
        "retain": load_split(source, names["retain_perturbed"]),
        "real_authors": load_split(source, names["real_authors"]),
        "world_facts": load_split(source, names["world_facts"]),
        "holdout": load_split(source, names["holdout"]),
    }


def _eval_config(cfg) -> EvalConfig:
    metrics = QUICK_METRICS if cfg.eval.metrics == "quick" else None
    return EvalConfig(batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens, metrics=metrics)


def model_digest(path: str) -> str:
    """The identity of a model: a content hash of its safetensors files (a Hub name stands for itself)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*.safetensors")) if p.is_dir() else ([p] if p.is_file() else [])
    if not files:
        return path  # a Hub name: identified by name
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_evaluation(ctx: RunContext, model_path: str, data: dict, retain_ref: dict | None) -> dict:
    """Evaluate a model that is fixed for a sweep (target, retain) once; keyed by content, never by folder."""
    from mpu_cli.cachekey import code_digest

    key = json.dumps({"v": EVAL_VERSION, "code": code_digest(*EVAL_MODULES), "model": model_digest(model_path),
                      "data": hashlib.sha256(
        json.dumps(data, sort_keys=True).encode()).hexdigest(), "eval": OmegaConf.to_container(ctx.cfg.eval, resolve=True),
        "fmt": ctx.fmt.__dict__, "ref": retain_ref}, sort_keys=True, default=str)
    cache = Path(ctx.cfg.prepare.cache_dir).expanduser() / "evals" / hashlib.sha256(key.encode()).hexdigest()[:16]
    from mpu_cli.files import read_marked_json

    cached = read_marked_json(cache / "TOFU_EVAL.json", cache / "COMPLETE")  # never without its marker
    if cached is not None:
        return cached
    model = load_model(model_path, ctx.dtype).to(ctx.device or "cpu")
    result = evaluate(model, ctx.tokenizer, data, ctx.fmt, _eval_config(ctx.cfg), retain_reference=retain_ref)
    write_eval(cache, result)
    atomic_write_text(cache / "COMPLETE", "ok\n")  # marker last
    return result


def retain_reference_from_logs(path: str) -> dict:
    """The forget_quality / privleak reference from a retain model's TOFU_EVAL.json (ours or open-unlearning's)."""
    try:
        return load_retain_reference(path)
    except ValueError as e:
        raise ConfigError(f"retain_logs_path={path!r}: {e}") from None


def check_model_sources(model_cfg) -> None:
    """Fail fast, before any building, on a model reference that cannot be opened (e.g. a Hub name
    while offline): FileNotFoundError with one line naming the key."""
    for key in ("base", "target", "retain", "tokenizer"):
        value = model_cfg.get(key)
        if value and value not in ("embedded", "finetune"):
            resolve_model_path(value, f"model.{key}")


def _public_skeleton(target_path: str, dtype: torch.dtype):
    """The client's model object: public architecture, weights to be overwritten by a published copy."""
    config = AutoConfig.from_pretrained(target_path)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def check_data(data_cfg) -> None:
    """Load (and so validate, data.validate) every data config the run reads, before anything is written."""
    from mpu_cli.data.tofu import load_public_text

    names = split_names(data_cfg.split)
    for name in dict.fromkeys(["full", *names.values()]):
        load_split(data_cfg.source, name)
    if data_cfg.source == "embedded":
        load_public_text(data_cfg.source)


def run(cfg, out: Path) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    mode = rundir.check(cfg, out)  # a finished run is not overwritten; a resumed one must match
    dtype = resolve_dtype(cfg.model.dtype)
    check_model_sources(cfg.model)
    check_data(cfg.data)
    # A given retain log replaces the retain model: nothing to build or evaluate for it.
    retain_logs = cfg.get("retain_logs_path")
    retain_ref = retain_reference_from_logs(retain_logs) if retain_logs else None
    model_cfg = OmegaConf.merge(cfg.model, {"retain": None}) if retain_logs else cfg.model
    from mpu_cli.models.check import check_models

    if model_cfg.retain == "finetune" and model_cfg.target != "finetune":
        # A given target is checked against the base before a retain model is built for it.
        check_models(prepare_models(OmegaConf.merge(model_cfg, {"retain": None}), cfg.data, cfg.prepare), model_cfg)
    prepared = prepare_models(model_cfg, cfg.data, cfg.prepare)
    check_models(prepared, model_cfg)  # architectures and shapes agree
    rundir.start(cfg, out, mode)
    if mode == "resume":
        log.info("resuming the unfinished run in %s", out)
    kill_point("after_prepare")
    t_prepare = time.perf_counter() - t0
    ctx = RunContext(cfg, out, prepared, load_tokenizer(prepared.tokenizer), chat_format(cfg.model), dtype,
                     pick_device(cfg.device))
    data = eval_data(cfg.data.source, cfg.data.split)

    if retain_ref is not None:
        log.info("retain reference: %s (%d forget truth ratios)", retain_logs, len(retain_ref["forget_tr"]))
    elif prepared.retain:
        retain_eval = cached_evaluation(ctx, prepared.retain, data, None)
        write_eval(out / "retain", retain_eval)
        if "forget_truth_ratio" in retain_eval:  # absent under eval.metrics=quick
            retain_ref = load_retain_reference(retain_eval)
    target_eval = cached_evaluation(ctx, prepared.target, data, retain_ref)
    write_eval(out / "target", target_eval)
    kill_point("after_target_eval")

    t1 = time.perf_counter()
    theta, timings = unlearn(ctx)
    t_unlearn = time.perf_counter() - t1

    t2 = time.perf_counter()
    model = _public_skeleton(prepared.target, dtype).to(ctx.device or "cpu")
    load_state_into(model, theta)
    model.eval()
    set_scope("final")
    result = evaluate(model, ctx.tokenizer, data, ctx.fmt, _eval_config(cfg), retain_reference=retain_ref)
    set_scope(None)
    write_eval(out, result)
    if cfg.save_model:
        from mpu_cli.models.io import save_model

        save_model(model, ctx.tokenizer, out / "model")
    t_eval = time.perf_counter() - t2

    summary = summarize(result)
    row = result_row(cfg, summary, summarize(target_eval), model_digest(prepared.target)) | {
        "time_prepare_s": round(t_prepare, 2), "time_unlearn_s": round(t_unlearn, 2),
        "time_server_s": round(timings["server"], 3), "time_client_s": round(timings["client"], 2),
        "time_eval_s": round(t_eval, 2), "time_total_s": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / "results.csv", pd.DataFrame([row]).to_csv(index=False))
    kill_point("before_complete")
    rundir.finish(out)  # last: the run directory's files are final
    log.info("results: %s", json.dumps({k: row[k] for k in summary if k in row and k != "non_finite"}))
    return row


def unlearn(ctx: RunContext) -> tuple[dict, dict]:
    """R rounds of MPU (or the clean / noised baselines) on the target; returns the final exact theta."""
    cfg = ctx.cfg
    if uses_file_transport(cfg):
        return unlearn_files(ctx)
    target = load_model(ctx.prepared.target, ctx.dtype)
    theta = {k: v.detach().clone() for k, v in target.state_dict().items()}
    base = state_dict_fp32(load_model(ctx.prepared.base, ctx.dtype)) if ctx.prepared.base else None
    layout = ModelLayout.from_hf_config(target.config)
    del target
    server = MPUServer(theta, layout, ServerConfig(
        arm=cfg.arm, kappa=cfg.kappa, m=cfg.m, alpha_schedule=cfg.server.alpha_schedule, eta=cfg.server.eta,
        seed=cfg.seed, perturb_unprotected=cfg.server.perturb_unprotected,
        noise_reference=cfg.server.noise_reference), base=base)
    # Stage checkpoints (RUN/server_private): a resumed run restores the server as the last stage left it.
    ckpt = Checkpoint(ctx.out)
    st = ckpt.load()
    if st is not None:
        saved = ckpt.theta(st)
        server = MPUServer.restore(saved if saved is not None else server.theta, Checkpoint.meta(st), layout,
                                   base=base)
        log.info("resume: server at round %d%s", server.round, " (published, not aggregated)" if server.pending else "")
    atomic_write_json(ctx.out / "server_public.json", server.public_info())

    # Client side: its own data, its algorithm, a public model skeleton.
    algorithm = build_algorithm(cfg.algorithm.name, OmegaConf.to_container(cfg.algorithm.params, resolve=True))
    client_data = encode_client_data(ctx.tokenizer, ctx.fmt, cfg.data.source, cfg.data.split, algorithm)
    client_model = _public_skeleton(ctx.prepared.target, ctx.dtype)
    # server_clean reproduces the paper's code: the client's reference is the exact theta_0 (a leak).
    reference_state = ({n: t.detach().to(torch.float32, copy=True) for n, t in theta.items()}
                       if cfg.client.reference == "server_clean" else None)
    del theta

    timings = {"server": 0.0, "client": 0.0}
    first = server.round if server.pending else server.round + 1
    for r in range(first, cfg.rounds + 1):
        t = time.perf_counter()
        if server.pending:  # resumed inside round r: the same copies again, from the recorded secrets
            copies = server.pending_copies()
        else:
            copies = server.publish_copies()
            st = ckpt.published(server, st)  # the round's secrets, before any client work
        timings["server"] += time.perf_counter() - t
        kill_point(f"round{r}_after_publish")
        # One copy in flight per slot: built when the client takes it, its returned copy saved and read back
        # lazily by the aggregate, so memory does not grow with m (issue 8).
        def client_task(k: int, r=r, copies=copies, st=st) -> dict:
            t = time.perf_counter()
            published = copies[k]
            t_server = time.perf_counter() - t
            t = time.perf_counter()
            client_cfg = ClientConfig(**OmegaConf.to_container(cfg.client, resolve=True))
            client_cfg.seed = cfg.client.seed + r
            set_scope(f"round{r}_copy{k + 1}")
            updated = unlearn_copy(client_model, published, algorithm, client_data, client_cfg,
                                   pad_id(ctx.tokenizer), reference_state,
                                   desc=f"round {r}/{cfg.rounds} copy {k + 1}/{len(copies)}")
            del published
            set_scope(None)
            ckpt.save_returned(st, k, updated)
            return {"server": t_server, "client": time.perf_counter() - t}

        saved = [ckpt.load_returned(st, k) for k in range(len(copies))]  # checked once each
        todo = [k for k, done in enumerate(saved) if done is None]
        for k, done in enumerate(saved):
            if done is not None:  # returned before an interruption: not redone
                log.info("round %d copy %d/%d: reusing the returned copy saved before the interruption",
                         r, k + 1, len(copies))
        if forked_slots(cfg) > 1:
            t, slots = time.perf_counter(), forked_slots(cfg)
            spent = run_in_slots(client_task, todo, slots)
            # The slots build their copies concurrently: server = the copies' build time summed over slots,
            # client = the section's wall time less each slot's average share of it.
            built = sum(s["server"] for s in spent)
            timings["server"] += built
            timings["client"] += time.perf_counter() - t - built / slots
            log.info("round %d: copies %s unlearned in %d parallel slots", r, [k + 1 for k in todo], slots)
        else:
            for k in todo:
                spent = client_task(k)
                timings["server"] += spent["server"]
                timings["client"] += spent["client"]
                log.info("round %d copy %d/%d unlearned", r, k + 1, len(copies))
                kill_point(f"round{r}_copy{k + 1}_done")
        returned = [done if done is not None else ckpt.load_returned(st, k) for k, done in enumerate(saved)]
        if any(x is None for x in returned):
            raise RuntimeError(f"round {r}: copies {[k for k, x in enumerate(returned) if x is None]} were not returned")
        del copies
        kill_point(f"round{r}_before_aggregate")
        t = time.perf_counter()
        set_scope(f"round{r}")
        server.aggregate(returned)
        set_scope(None)
        timings["server"] += time.perf_counter() - t
        del returned
        st = ckpt.commit_round(server, st)
        atomic_write_json(ctx.out / "server_public.json", server.public_info())
        kill_point(f"round{r}_after_aggregate")
    return server.theta, timings


def client_settings(cfg) -> dict:
    """What the client process is given about itself (RUN/client/client.json): algorithm, client settings, its
    data, the chat format and the training dtype."""
    from mpu_cli.transport.client_cli import client_config

    return client_config(
        algorithm={"name": cfg.algorithm.name, "params": OmegaConf.to_container(cfg.algorithm.params, resolve=True)},
        client=OmegaConf.to_container(cfg.client, resolve=True),
        data={"source": cfg.data.source, "split": cfg.data.split},
        fmt=dict(chat_format(cfg.model).__dict__), dtype=cfg.model.dtype)


def unlearn_files(ctx: RunContext) -> tuple[dict, dict]:
    """The same rounds through `mpu-server` / `mpu-client` processes exchanging files (mpu_cli.transport)."""
    from mpu_cli.transport.local import run_rounds

    cfg = ctx.cfg
    log.info("transport=files: server and client run as separate processes (parallel_copies=%d)",
             cfg.runner.parallel_copies)
    return run_rounds(cfg, ctx.out, ctx.prepared, client_settings(cfg), parallel=cfg.runner.parallel_copies)


HEADLINE = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "model_utility",
            "forget_quality", "forget_truth_ratio", "privleak", "extraction_strength", "exact_memorization")


# results.csv names these config leaves by short names; every other leaf keeps its dotted key.
SHORT_NAMES = {"model.name": "model", "data.name": "data", "data.split": "split", "algorithm.name": "algorithm"}


def result_row(cfg, summary: dict, target_summary: dict, target_hash: str) -> dict:
    """results.csv's one row: what identifies the run (short names, the arm's effective κ and m, the target's
    content hash), every other leaf of the resolved configuration under its dotted key, then the metrics.
    Non-finite metric values are left empty and named in `non_finite`."""
    row = {
        "model": cfg.model.name, "data": cfg.data.name, "split": cfg.data.split, "algorithm": cfg.algorithm.name,
        "arm": cfg.arm, "kappa": cfg.kappa if cfg.arm != "clean" else 0.0,
        "m": cfg.m if cfg.arm == "mpu" else 1, "seed": cfg.seed, "target_hash": target_hash,
        "leaks_theta0": cfg.client.reference == "server_clean",
    }
    for key, value in rundir.flat(rundir.run_config(cfg)).items():
        if key not in SHORT_NAMES and key not in row:
            row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    metrics = dict(summary) | {f"target_{k}": target_summary[k] for k in HEADLINE if k in target_summary}
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    row |= {k: (None if k in bad else v) for k, v in metrics.items()}
    row["non_finite"] = ";".join(bad)
    return row
