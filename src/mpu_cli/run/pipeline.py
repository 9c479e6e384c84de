"""One run, top to bottom: check the inputs → prepare the models → evaluate the fixed models → R rounds
(run/rounds.py) → evaluate the result → results.csv → COMPLETE. The only module that wires the server and
the client together; each stage leaves what a resumed run needs (run/rundir.py, run/checkpoint.py)."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from mpu_cli.data.formatting import pad_id
from mpu_cli.devices import pick_device
from mpu_cli.evals import benchmarks
from mpu_cli.faults import kill_point, set_scope
from mpu_cli.files import atomic_write_json, atomic_write_text
from mpu_cli.models.check import check_models
from mpu_cli.models.io import load_state_into, load_tokenizer, resolve_dtype
from mpu_cli.models.prepare import prepare_models
from mpu_cli.mpu.arms import arm_of
from mpu_cli.mpu.build import load_server
from mpu_cli.mpu.server import MPUServer
from mpu_cli.mpu.settings import ServerConfig
from mpu_cli.mpu.survival import result_columns
from mpu_cli.run import identity, rundir, seed_tag
from mpu_cli.run.checkpoint import Checkpoint
from mpu_cli.run.evaluation import (
    cached_evaluation,
    eval_config,
    eval_data,
    retain_reference_from_logs,
)
from mpu_cli.run.inputs import check_cache_dir, check_data, check_model_families, check_model_sources
from mpu_cli.run.rounds import InProcessRounds, drive
from mpu_cli.run.server_state import ServerState
from mpu_cli.run.settings import chat_format, client_config, client_dtype
from mpu_cli.run.slots import as_cluster_jobs, forked_slots, uses_file_transport
from mpu_cli.run.stage import set_stage
from mpu_cli.unlearn.algorithms import build_algorithm
from mpu_cli.unlearn.client import unlearn_copy
from mpu_cli.unlearn.settings import ReferencePolicy

log = logging.getLogger(__name__)


def run(cfg, out: Path) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    mode = rundir.check(cfg, out)  # a finished run is not overwritten; a resumed one must match
    dtype = resolve_dtype(cfg.model.dtype)

    # 1. inputs: every model reference opens, every data config is valid — before anything is written
    set_stage("the input checks")
    check_model_sources(cfg.model)
    check_model_families(cfg.model)  # a family the reparameterization supports
    check_data(cfg.data)
    retain_logs = cfg.get("retain_logs_path")  # a given retain log replaces the retain model
    retain_ref = retain_reference_from_logs(retain_logs, cfg.data) if retain_logs else None
    model_cfg = OmegaConf.merge(cfg.model, {"retain": None}) if retain_logs else cfg.model

    # 2. prepare: base, target and retain models (built once, cached by content of their inputs)
    set_stage("prepare (building or checking the base, target and retain models)")
    check_cache_dir(cfg.prepare.cache_dir)
    if model_cfg.retain == "finetune" and model_cfg.target != "finetune":
        # A given target is checked against the base before a retain model is built for it.
        check_models(prepare_models(OmegaConf.merge(model_cfg, {"retain": None}), cfg.data, cfg.prepare), model_cfg)
    prepared = prepare_models(model_cfg, cfg.data, cfg.prepare)
    check_models(prepared, model_cfg)  # architectures and shapes agree
    models = identity.run_models(prepared)  # by content: weights, config, tokenizer
    if mode == "resume":
        identity.check_unchanged(out, models)  # never continue a run on other models than it started with
    kill_point("before_start")
    rundir.start(cfg, out, mode)
    identity.record(out, models)
    if mode == "resume":
        log.info("resuming the unfinished run in %s", out)
    kill_point("after_prepare")
    t_prepare = time.perf_counter() - t0
    tokenizer, fmt, device = load_tokenizer(prepared.tokenizer), chat_format(cfg.model), pick_device(cfg.device)
    bench = benchmarks.of(cfg.data)
    data = eval_data(cfg.data)

    # 3. the fixed models' evaluations: retain (the reference of forget_quality / privleak), then target
    set_stage("the evaluation of the target and retain models")
    if retain_ref is not None:
        log.info("retain reference: %s", retain_logs)
    elif prepared.retain:
        retain_eval = cached_evaluation(cfg, prepared.retain, tokenizer, fmt, dtype, device, data, None, "retain",
                                        identity.evaluated_digest(models, "retain"))
        bench.write_eval(out / "retain", retain_eval)
        retain_ref = bench.reference_from(retain_eval)  # None under eval.metrics=quick
    target_hash = models["target"].digest  # results.csv: the target's content
    target_eval = cached_evaluation(cfg, prepared.target, tokenizer, fmt, dtype, device, data, retain_ref, "target",
                                    identity.evaluated_digest(models, "target"))
    bench.write_eval(out / "target", target_eval)
    kill_point("after_target_eval")

    # 4. R rounds of publish → unlearn each copy → aggregate
    t1 = time.perf_counter()
    theta, timings = unlearn(cfg, out, prepared, tokenizer, dtype)
    t_unlearn = time.perf_counter() - t1

    # 5. the unlearned model's evaluation
    set_stage("the evaluation of the unlearned model")
    t2 = time.perf_counter()
    model = public_skeleton(prepared.target, dtype).to(device or "cpu")
    load_state_into(model, theta)
    model.eval()
    set_scope("final")
    result = bench.evaluate(model, tokenizer, data, fmt, eval_config(cfg), retain_reference=retain_ref,
                            label="unlearned")
    set_scope(None)
    bench.write_eval(out, result)
    if cfg.save_model:
        from mpu_cli.models.io import save_model

        save_model(model, tokenizer, out / "model")
    t_eval = time.perf_counter() - t2

    # 6. results.csv, then COMPLETE
    set_stage("writing the results")
    summary = bench.summarize(result)
    # how much noise survived publication: measured by the server (either transport) into its private state
    survival = result_columns(ServerState(out / "server_private").survival())
    row = result_row(cfg, summary, bench.summarize(target_eval), target_hash) | survival | {
        "time_prepare_s": round(t_prepare, 2), "time_unlearn_s": round(t_unlearn, 2),
        "time_server_s": round(timings["server"], 3), "time_client_s": round(timings["client"], 2),
        "time_eval_s": round(t_eval, 2), "time_total_s": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / "results.csv", pd.DataFrame([row]).to_csv(index=False))
    kill_point("before_complete")
    rundir.finish(out)  # last: the run directory's files are final
    return row


def public_skeleton(target_path: str, dtype: torch.dtype):
    """The client's model object: public architecture, weights to be overwritten by a published copy."""
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(target_path), dtype=dtype)


def unlearn(cfg, out: Path, prepared, tokenizer, dtype) -> tuple[dict, dict]:
    """The rounds on the target; returns the final exact θ (fp32) and the server / client timings."""
    if as_cluster_jobs(cfg):
        from mpu_cli.run.jobs import JobRounds

        log.info("runner.launcher=submitit: each copy is one mpu-client job (cluster=%s)", cfg.runner.submitit.cluster)
        return drive(JobRounds(cfg, out, prepared), cfg.rounds)
    if uses_file_transport(cfg):
        from mpu_cli.run.processes import ProcessRounds

        log.info("transport=files: server and client run as separate processes (parallel_copies=%d)",
                 cfg.runner.parallel_copies)
        return drive(ProcessRounds(cfg, out, prepared, parallel=cfg.runner.parallel_copies), cfg.rounds)

    # Server side: θ_0 (the target), the public base, the stage checkpoint of a resumed run.
    server = load_server(prepared.target, prepared.base, dtype, ServerConfig.from_config(cfg))
    # server_clean reproduces the paper's code: the client's reference is the exact θ_0 (a leak).
    reference_state = ({n: t.clone() for n, t in server.theta.items()}
                       if cfg.client.reference == ReferencePolicy.server_clean else None)
    ckpt = Checkpoint(out)
    st = ckpt.load()
    if st is not None:
        saved = ckpt.theta(st)
        server = MPUServer.restore(saved if saved is not None else server.theta, ckpt.meta(st), server.layout,
                                   base=server.base)
        log.info("resume: server at round %d%s", server.round, " (published, not aggregated)" if server.pending else "")
    atomic_write_json(out / "server_public.json", server.public_info())

    # Client side: its own data, its algorithm, a public model skeleton in the dtype of the copies it receives.
    algorithm = build_algorithm(cfg.algorithm.name, OmegaConf.to_container(cfg.algorithm.params, resolve=True))
    client_data = benchmarks.of(cfg.data).client_data(tokenizer, chat_format(cfg.model), cfg.data, algorithm)
    client_model = public_skeleton(prepared.target, resolve_dtype(client_dtype(cfg)))

    n = server.n_copies

    def unlearn_fn(r: int, k: int, published: dict) -> dict:
        return unlearn_copy(client_model, published, algorithm, client_data, client_config(cfg, r),
                            pad_id(tokenizer), reference_state, desc=f"round {r}/{cfg.rounds} copy {k + 1}/{n}")

    def on_commit(srv) -> None:
        atomic_write_json(out / "server_public.json", srv.public_info())

    return drive(InProcessRounds(server, unlearn_fn, ckpt, slots=forked_slots(cfg), on_commit=on_commit,
                                 aggregate=adapter_aggregate(server, cfg)), cfg.rounds)


def adapter_aggregate(server, cfg):
    """Post-Process of a LoRA client's adapters (client.lora), None for whole copies."""
    if not cfg.client.lora.enabled:
        return None
    from mpu_cli.models.lora import config_json, peft_config, scaling
    from mpu_cli.mpu.lora_aggregate import aggregate_adapters

    s = scaling(config_json(peft_config(client_config(cfg, 0).lora)))  # what the client's adapter_config.json says
    return lambda returned, out: aggregate_adapters(server, returned, [s] * len(returned), out=out)


# results.csv names these config leaves by short names; every other leaf keeps its dotted key.
SHORT_NAMES = {"model.name": "model", "data.name": "data", "data.split": "split", "algorithm.name": "algorithm"}


def result_row(cfg, summary: dict, target_summary: dict, target_hash: str) -> dict:
    """results.csv's one row: what identifies the run (short names, the arm's effective κ and m, the seed's
    public tag, the target's content hash), every other leaf of the resolved configuration under its dotted key,
    then the metrics.
    Non-finite metric values are left empty and named in `non_finite`."""
    arm = arm_of(cfg.arm)
    row = {
        "model": cfg.model.name, "data": cfg.data.name, "split": cfg.data.split, "algorithm": cfg.algorithm.name,
        "arm": cfg.arm, "kappa": arm.effective_kappa(cfg.kappa),
        "m": arm.effective_m(cfg.m, cfg.server.noised_alpha),
        "seed": seed_tag.tag(cfg.seed, cfg.prepare.cache_dir), "target_hash": target_hash,
        "leaks_theta0": cfg.client.reference == ReferencePolicy.server_clean,
    }
    for key, value in rundir.flat(rundir.run_config(cfg)).items():
        if key not in SHORT_NAMES and key not in row:
            row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    headline = benchmarks.of(cfg.data).headline
    metrics = dict(summary) | {f"target_{k}": target_summary[k] for k in headline if k in target_summary}
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    row |= {k: (None if k in bad else v) for k, v in metrics.items()}
    row["non_finite"] = ";".join(bad)
    return row
