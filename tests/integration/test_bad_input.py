"""Bad input gives one clear error line on stderr, exit code 2, and no partial file that looks complete.

Every case is an `mpu-run` subprocess; they are started together (module fixture) and each test checks one."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mpu_cli.data.tofu import embedded_dir

pytestmark = pytest.mark.integration  # real processes / the prepared models

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1", "seed=0"]
PROGRESS = re.compile(r"\d+%\|.*\|")
FINAL = ("COMPLETE", "results.csv", "TOFU_SUMMARY.json", "TOFU_EVAL.json")


def _rows(folder: Path, config: str) -> list[dict]:
    return [json.loads(ln) for ln in (folder / f"{config}.jsonl").read_text().splitlines() if ln.strip()]


def _write_rows(folder: Path, config: str, rows: list[dict]) -> None:
    (folder / f"{config}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _data_folder(root: Path, name: str, corrupt) -> Path:
    folder = root / name
    shutil.copytree(embedded_dir(), folder, ignore=shutil.ignore_patterns("*.md"))
    corrupt(folder)
    return folder


def _missing_field(f: Path):
    rows = _rows(f, "forget01")
    del rows[1]["question"]
    _write_rows(f, "forget01", rows)


def _empty_forget(f: Path):
    (f / "forget01.jsonl").write_text("")


def _no_answer(f: Path):
    rows = _rows(f, "forget01")
    rows[2]["answer"] = ""
    _write_rows(f, "forget01", rows)


def _invalid_utf8(f: Path):
    data = (f / "forget01.jsonl").read_bytes()
    (f / "forget01.jsonl").write_bytes(data[:40] + b"\xff\xfe" + data[40:])


def _duplicate_ids(f: Path):
    rows = [r | {"id": i} for i, r in enumerate(_rows(f, "forget01"))]
    rows[3]["id"] = 0
    _write_rows(f, "forget01", rows)


DATA_CASES = {
    "missing_field": (_missing_field, "missing field 'question'"),
    "empty_forget": (_empty_forget, "the forget set 'forget01' is empty"),
    "no_answer": (_no_answer, "has no answer"),
    "invalid_utf8": (_invalid_utf8, "not valid UTF-8"),
    "duplicate_ids": (_duplicate_ids, "duplicate id 0"),
}


def _other_architecture(path: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=1, hidden_size=16, intermediate_size=24, num_attention_heads=2,
                                 num_key_value_heads=1, vocab_size=64)).save_pretrained(path)
    return path


def _unsupported_family(path: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(path)
    return path


def _other_shape(path: Path) -> Path:
    from transformers import LlamaForCausalLM

    from mpu_cli.models.tiny import load_embedded_tokenizer, tiny_llama_config

    cfg = tiny_llama_config(load_embedded_tokenizer())
    cfg.intermediate_size = 400  # the base has 432
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def _truncated(path: Path) -> Path:
    """A whole model whose model.safetensors lost its second half (a copy cut short)."""
    from transformers import LlamaForCausalLM

    from mpu_cli.models.tiny import load_embedded_tokenizer, tiny_llama_config

    LlamaForCausalLM(tiny_llama_config(load_embedded_tokenizer())).save_pretrained(path)
    weights = path / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory, mpu_run_cmd):
    """case -> (returncode, stdout, stderr, run dir, expected text); all processes run concurrently."""
    root = tmp_path_factory.mktemp("bad_input")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPU_KILL_AT", None)
    env.pop("MPU_FAULT_INJECT", None)
    jobs = {}
    for name, (corrupt, expect) in DATA_CASES.items():
        jobs[name] = ([f"data.source={_data_folder(root / 'data', name, corrupt)}"], env, expect)
    jobs["missing_model"] = ([f"model.target={root / 'no' / 'such' / 'model'}"], env, "does not exist")
    jobs["other_architecture"] = ([f"model.target={_other_architecture(root / 'qwen2')}"], env,
                                  "is a qwen2 (Qwen2ForCausalLM) model but model.base='embedded' is llama")
    unsupported = "model_type='gpt2' is not supported by the reparameterization; accepted: llama, mistral, qwen2"
    jobs["unsupported_family"] = ([f"model.target={_unsupported_family(root / 'gpt2')}"], env, unsupported)
    jobs["shape_mismatch"] = ([f"model.target={_other_shape(root / 'llama_wide')}"], env,
                              "has shape")
    jobs["truncated_target"] = ([f"model.target={_truncated(root / 'truncated')}"], env,
                                "model.safetensors is not a readable safetensors file")
    jobs["full_disk"] = ([], env | {"MPU_FAULT_INJECT": "save_tensors:ENOSPC"}, "No space left on device")
    procs = {}
    for name, (args, e, expect) in jobs.items():
        out = root / "runs" / name
        procs[name] = (subprocess.Popen([*mpu_run_cmd, *FAST, *args, f"hydra.run.dir={out}"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=e), out, expect)
    results = {}
    for name, (p, out, expect) in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        results[name] = (p.returncode, stdout, stderr, out, expect)
    return results


def _check(cases, name, code=2):
    rc, _stdout, stderr, out, expect = cases[name]
    # progress bars (transformers' "Loading weights" on stderr) are not error lines
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert rc == code, f"{name}: rc={rc}\n{stderr[-3000:]}"
    assert len(lines) == 1, f"{name}: expected one error line, got:\n{stderr[-3000:]}"
    assert lines[0].startswith("mpu-run: error: ") and expect in lines[0], lines[0]
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    # nothing that looks like a finished run (target/ and retain/ evaluations of completed stages may exist)
    assert not [p for p in files if p.parent == out and p.name in FINAL], files
    assert not [p for p in files if ".tmp" in p.name], files  # no half-written file left behind
    return lines[0], files


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_malformed_data(cases, name):
    line, files = _check(cases, name)
    assert "forget01" in line
    assert not [p for p in files if p.name == "run.json"]  # refused before the run started


def test_model_path_does_not_exist(cases):
    line, _ = _check(cases, "missing_model")
    assert "model.target=" in line


def test_model_of_another_architecture(cases):
    line, files = _check(cases, "other_architecture")
    assert "accepted: a model of the base's architecture" in line
    assert not [p for p in files if p.name == "run.json"]


def test_model_of_an_unsupported_family(cases):
    line, files = _check(cases, "unsupported_family")
    assert "model.target=" in line
    assert not [p for p in files if p.name == "run.json"]  # refused before the run started


def test_base_target_shape_mismatch(cases):
    line, files = _check(cases, "shape_mismatch")
    assert "400" in line and "432" in line and "accepted: a model of the same size as the base" in line, line
    assert not [p for p in files if p.name == "run.json"]


def test_truncated_target_weights(cases):
    line, files = _check(cases, "truncated_target")
    assert "model.target=" in line and "truncated" in line, line
    assert not [p for p in files if p.name == "run.json"]


def test_full_disk_at_save(cases):
    line, files = _check(cases, "full_disk", code=1)  # a fault, not bad input
    assert "resume=true" in line
    names = {str(p.relative_to(cases["full_disk"][3])) for p in files}
    # the returned copy could not be saved: neither it nor its marker exists
    assert not [n for n in names if n.startswith("server_private/round_1/copy_")], names


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_numbers_are_refused_up_front(mpu_run_cmd, tmp_path, value):
    import time

    t = time.perf_counter()
    proc = subprocess.run([*mpu_run_cmd, f"kappa={value}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - t
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "is not a finite number" in proc.stderr, proc.stderr
    assert proc.stderr.startswith("mpu-run: error: kappa=")
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run directory
    assert took < 3.0, f"took {took:.1f} s"


def test_a_run_whose_loss_becomes_nan_fails_without_complete(mpu_run_cmd, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([*mpu_run_cmd, *FAST, "kappa=1e6", f"hydra.run.dir={out}"], capture_output=True,
                          text=True, timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert proc.returncode == 1, proc.stderr[-3000:]
    # the loss, or else the weights it updated, turn NaN: either names round, copy (and tensor)
    assert len(lines) == 1 and lines[0].startswith("mpu-run: error: round 1/1 copy 1/2: "), lines
    assert " nan" in lines[0]
    assert "resume=true" in lines[0]
    assert not (out / "COMPLETE").exists() and not (out / "results.csv").exists()
    assert (out / "FAILED").read_text().startswith("round 1/1 copy 1/2")
