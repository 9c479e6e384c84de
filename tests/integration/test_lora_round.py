"""LoRA clients end to end on the embedded target: every algorithm unlearns through an adapter, and a round over
the file transport (separate mpu-server / mpu-client processes, parallel copies) lets only the adapter's files
cross and gives the in-process LoRA run's θ bitwise. The same run stopped before its aggregate: mpu-server
refuses the round once one copy is swapped for a full copy, and the resumed run keeps the sound adapter, redoes
the damaged one and ends where the uninterrupted run did."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from mpu_cli.config import CONF_DIR
from mpu_cli.transport import exchange as ex

pytestmark = pytest.mark.integration  # real processes / the prepared models

ALGORITHMS = ["ga", "graddiff", "npo", "simnpo", "idkdpo", "undial", "wga", "satimp", "rmu"]
CACHE = os.environ.get("MPU_CACHE_DIR", "~/.cache/mpu-cli")
LORA = ["client.lora.enabled=true", "seed=0", "kappa=0.01", "m=2", f"prepare.cache_dir={CACHE}"]
FAST = ["client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "data.split=forget01", "save_model=true",
        "algorithm=npo"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def _cfg(overrides: list[str]):
    with initialize_config_dir(CONF_DIR, version_base=None):
        return compose("config", overrides=LORA + overrides)


def _unlearn(cfg, out: Path) -> tuple[dict, object]:
    """θ after the in-process rounds (single-threaded, as the processes run) and the prepared models."""
    from mpu_cli.models.io import load_tokenizer, resolve_dtype
    from mpu_cli.models.prepare import prepare_models
    from mpu_cli.run.pipeline import unlearn

    prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theta, _ = unlearn(cfg, out, prepared, load_tokenizer(prepared.tokenizer), resolve_dtype(cfg.model.dtype))
    finally:
        torch.set_num_threads(threads)
    return theta, prepared


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_forgets_through_an_adapter(tmp_path, prepared_models, algorithm):
    """arm=mpu (κ 0.01, m 2), the model's presets, forget01: the merged adapters lower forget Prob (teacher-forced,
    no generation) — the LoRA variant of test_algorithms_forget's every-algorithm test."""
    from mpu_cli.data.formatting import pad_id
    from mpu_cli.data.tofu import load_split
    from mpu_cli.evals.tofu import forget_prob
    from mpu_cli.models.io import load_model, load_state_into, load_tokenizer, resolve_dtype
    from mpu_cli.models.prepare import encode_rows
    from mpu_cli.run.pipeline import public_skeleton
    from mpu_cli.run.settings import chat_format

    cfg = _cfg([f"algorithm={algorithm}", "arm=mpu", "data.split=forget01"])
    theta, prepared = _unlearn(cfg, tmp_path)
    tok, dtype = load_tokenizer(prepared.tokenizer), resolve_dtype(cfg.model.dtype)
    forget = encode_rows(tok, load_split(cfg.data.source, cfg.data.split), chat_format(cfg.model))
    model = public_skeleton(prepared.target, dtype)
    load_state_into(model, theta)
    with torch.no_grad():
        target, unlearned = (forget_prob(m.eval(), forget, pad_id(tok))
                             for m in (load_model(prepared.target, dtype), model))
    assert unlearned < target - 0.05, (target, unlearned)


FILES = [*LORA, *FAST, "transport=files", "runner.parallel_copies=2"]
NO_FAULTS = {k: v for k, v in ENV.items() if k not in ("MPU_KILL_AT", "MPU_KILL_SIGNAL", "MPU_FAULT_INJECT")}


@pytest.fixture(scope="module")
def files_run(tmp_path_factory, mpu_run_cmd):
    out = tmp_path_factory.mktemp("lora") / "files"
    proc = subprocess.run([*mpu_run_cmd, *FILES, f"hydra.run.dir={out}"], check=False, capture_output=True,
                          text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, mpu_run_cmd):
    """files_run's run killed after both adapters came back, before the server aggregated them."""
    out = tmp_path_factory.mktemp("lora") / "stopped"
    proc = subprocess.run([*mpu_run_cmd, *FILES, f"hydra.run.dir={out}"], check=False, capture_output=True,
                          text=True, timeout=900, env=NO_FAULTS | {"MPU_KILL_AT": "round1_before_aggregate"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert all(ex.is_returned(out / "exchange", 1, k) for k in range(2))
    return out


def test_a_lora_round_over_the_file_transport_sends_only_the_adapter_and_equals_in_process(files_run, tmp_path):
    out = files_run
    for k in range(2):
        d = ex.copy_dir(out / "exchange", 1, k)
        returned = sorted(p.name for p in d.iterdir())
        assert returned == sorted([ex.PUBLISHED, ex.PUBLISHED_MANIFEST, ex.ADAPTER, ex.ADAPTER_CONFIG,
                                   ex.RETURNED_MANIFEST]), returned
        manifest = json.loads((d / ex.RETURNED_MANIFEST).read_text())
        assert manifest["content"] == ex.ADAPTER_CONTENT and set(manifest["files"]) == {ex.ADAPTER, ex.ADAPTER_CONFIG}
        assert all(".lora_A." in n or ".lora_B." in n for n in manifest["tensors"])
        assert (d / ex.ADAPTER).stat().st_size < (d / ex.PUBLISHED).stat().st_size / 4
        assert json.loads((d / ex.ADAPTER_CONFIG).read_text())["r"] == 8
    theta, _ = _unlearn(_cfg(FAST), tmp_path / "inprocess")
    final = load_file(str(out / "server_private" / "theta_r1.safetensors"))
    assert final.keys() == theta.keys()
    assert max((final[n] - theta[n]).abs().max().item() for n in theta) == 0.0
    assert (out / "results.csv").exists()


def test_peft_loads_the_returned_adapter(files_run):
    """The returned files are peft's own: PeftModel.from_pretrained reads them into the public architecture."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    d = ex.copy_dir(files_run / "exchange", 1, 0)
    public = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(files_run / "exchange" / ex.PUBLIC_DIR)))
    model = PeftModel.from_pretrained(public, str(d))
    params = dict(model.named_parameters())
    for key, factor in load_file(str(d / ex.ADAPTER)).items():
        assert torch.equal(params[key.replace(".weight", ".default.weight")], factor)


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_mpu_server_refuses_a_round_mixing_a_full_copy_and_an_adapter(stopped_run, tmp_path):
    """Copy 0 answered with a full updated copy, copy 1 with its adapter: `mpu-server aggregate` says so in one
    line, exit 2, and neither its state nor a returned file changes (a copy of the stopped run, so the resume test
    below finds it as it was)."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    exchange, state = run / "exchange", run / "server_private"
    d0 = ex.copy_dir(exchange, 1, 0)
    pub = ex.read_json(d0 / ex.PUBLISHED_MANIFEST, "copy 0")
    ex.write_returned(exchange, pub, {n: t.float() for n, t in load_file(str(d0 / ex.PUBLISHED)).items()})
    assert ex.returned_refusal(exchange, 1, 0) is None and ex.returned_refusal(exchange, 1, 1) is None  # each sound
    before = {p: _files(p) for p in (state, d0, ex.copy_dir(exchange, 1, 1))}
    proc = subprocess.run([sys.executable, "-m", "mpu_cli.cli.server", "aggregate", "--state", str(state),
                           "--exchange", str(exchange)], check=False, capture_output=True, text=True, timeout=300,
                          env=NO_FAULTS)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpu-server: error: round 1: "), proc.stderr[-3000:]
    assert f"some copies returned {ex.ADAPTER_CONTENT!r}, others {ex.RETURNED_CONTENT!r}" in lines[0]
    assert "nothing was aggregated" in lines[0]
    assert {p: _files(p) for p in before} == before


def test_a_resumed_lora_run_keeps_the_sound_adapter_and_redoes_the_damaged_one(stopped_run, files_run, mpu_run_cmd):
    """Copy 1's adapter damaged while the run was stopped: the resume hands copy 0's returned adapter to the server
    as it is (its files untouched), has the client redo copy 1 only, and ends with the uninterrupted run's θ."""
    out, exchange = stopped_run, stopped_run / "exchange"
    d0, d1 = ex.copy_dir(exchange, 1, 0), ex.copy_dir(exchange, 1, 1)
    data = bytearray((d1 / ex.ADAPTER).read_bytes())
    data[-4] ^= 0xFF
    (d1 / ex.ADAPTER).write_bytes(bytes(data))
    assert ex.returned_refusal(exchange, 1, 0) is None
    assert "SHA-256" in ex.returned_refusal(exchange, 1, 1)
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in d0.iterdir()}
    proc = subprocess.run([*mpu_run_cmd, *FILES, f"hydra.run.dir={out}", "resume=true"], check=False,
                          capture_output=True, text=True, timeout=900, env=NO_FAULTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "round 1 copy 2/2: the returned copy would be refused" in log and "copy 1/2: the returned" not in log
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in d0.iterdir()} == kept
    assert ex.returned_refusal(exchange, 1, 1) is None
    final = load_file(str(out / "server_private" / "theta_r1.safetensors"))
    reference = load_file(str(files_run / "server_private" / "theta_r1.safetensors"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[n], reference[n]) for n in reference)
    assert (out / "COMPLETE").exists()
