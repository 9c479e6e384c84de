"""The multi-process client: a published copy unlearned by `accelerate launch` with 2 processes on the CPU (gloo,
DDP) equals the same copy unlearned by one process.

In what sense: the 2-process client splits every micro-batch between its processes and averages their gradients
(unlearn/accel.AcceleratedEngine), so each optimizer step sees the same global batch. A loss that is a token mean
over its micro-batch (the retain NLL) then averages over each process's half, though, so the one-process reference
runs micro-batches of one process's share: batch_size 1 x grad_accum 4 against batch_size 2 x grad_accum 2 on 2
processes: the same items, weights and steps; only the order of floating-point sums differs. Tolerance:
max |Δθ| <= 1e-5 · max |θ| over the returned copy, and forget Prob within 1e-5.

FSDP: torch's FSDP2 runs on CPU over gloo, but accelerate switches to FSDP only on GPUs; the client refuses an FSDP
config that accelerate would silently run as plain data parallel, with one line.
"""
import json
import os
import shutil
import subprocess

import pytest
from safetensors.torch import load_file

from mpu_cli.transport import exchange as ex

pytestmark = pytest.mark.integration
FAST = ["data.split=forget01", "seed=0", "algorithm=npo", "kappa=0.01", "m=2", "client.epochs=2"]
ONE = ["client.batch_size=1", "client.grad_accum=4"]
TWO = ["client.batch_size=2", "client.grad_accum=2", "accelerate=ddp", "client.mixed_precision=no"]
ENV = {k: v for k, v in os.environ.items() if k != "MPU_CACHE_DIR"} | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_multiprocess_client"):
        return compose(config_name="config", overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def published(tmp_path_factory, prepared_models):
    """Round 1 published by the server (in this process); copy 0 is unlearned below."""
    from mpu_cli.cli import server as server_cli
    from mpu_cli.models.prepare import prepare_models
    from mpu_cli.run.processes import server_init_args, write_server_settings

    cfg = _compose()
    prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
    root = tmp_path_factory.mktemp("multiprocess")
    state, exchange = root / "server_private", root / "exchange"
    server_cli.main(server_init_args(prepared, cfg.model.dtype, state, exchange, write_server_settings(cfg, state)))
    server_cli.main(["publish", "--state", str(state)])
    return root


def _unlearn(root, name: str, overrides: list[str], processes: int) -> subprocess.CompletedProcess:
    """Copy 0 unlearned by the client with these settings, started as a copy job starts it (run/jobs.py)."""
    from mpu_cli.run.jobs import client_prefix
    from mpu_cli.run.settings import client_settings

    cfg = _compose(*overrides)
    config = root / f"{name}.json"
    config.write_text(json.dumps(client_settings(cfg)))
    prefix = client_prefix(cfg.client, processes)
    assert (processes > 1) == ("launch" in prefix)
    cmd = prefix + ["unlearn", "--exchange", str(root / "exchange"), "--config", str(config), "--round", "1",
                    "--copy", "0"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=600)


def _returned(root, name: str) -> dict:
    path = ex.copy_dir(root / "exchange", 1, 0) / ex.RETURNED
    shutil.copy2(path, root / f"{name}.safetensors")
    return load_file(str(root / f"{name}.safetensors"))


def _forget_prob(root, state: dict) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    from mpu_cli.data.formatting import encode_qa, pad_id
    from mpu_cli.data.tofu import load_split
    from mpu_cli.evals.batched import score_sequences
    from mpu_cli.evals.tofu import prob_entry
    from mpu_cli.models.io import load_state_into, load_tokenizer
    from mpu_cli.run.settings import chat_format

    public = str(root / "exchange" / ex.PUBLIC_DIR)
    tokenizer, fmt = load_tokenizer(public), chat_format(_compose().model)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(public))
    load_state_into(model, state)
    model.eval()
    rows = load_split("embedded", "forget01")
    scored = score_sequences(model, [encode_qa(tokenizer, r["question"], r["answer"], fmt) for r in rows], 16,
                             pad_id(tokenizer))
    return prob_entry(scored)["agg_value"]


def test_two_process_ddp_client_equals_the_one_process_client(published):
    one = _unlearn(published, "one", ONE, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    theta_one = _returned(published, "one")
    two = _unlearn(published, "two", TWO, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("round 1 copy 0 returned") == 1  # the first process returns it, once
    theta_two = _returned(published, "two")
    sent = load_file(str(ex.copy_dir(published / "exchange", 1, 0) / ex.PUBLISHED))

    assert theta_one.keys() == theta_two.keys() == sent.keys()
    scale = max(t.abs().max().item() for t in theta_one.values())
    moved = max((theta_one[n] - sent[n].float()).abs().max().item() for n in sent)
    diff = max((theta_one[n] - theta_two[n]).abs().max().item() for n in theta_one)
    prob_one, prob_two = _forget_prob(published, theta_one), _forget_prob(published, theta_two)
    print(f"2 vs 1 process: max|dθ| = {diff:.3g} (max|θ| = {scale:.3g}, ratio {diff / scale:.3g}; the update "
          f"moved θ by up to {moved:.3g}); forget Prob {prob_one:.6f} vs {prob_two:.6f} (|Δ| = "
          f"{abs(prob_one - prob_two):.3g})")
    assert moved > 10 * diff  # the copy was trained, and the two clients trained it alike
    assert diff <= 1e-5 * scale
    assert abs(prob_one - prob_two) <= 1e-5


def test_fsdp_on_cpus_is_refused_in_one_line(published):
    proc = _unlearn(published, "fsdp", [*TWO, "accelerate=fsdp"], 2)
    assert proc.returncode != 0
    assert ("client.accelerate_config=fsdp asks for FSDP, but accelerate set these 2 processes up as MULTI_CPU"
            in proc.stderr), proc.stderr[-3000:]
