"""End to end on the embedded target: every algorithm, with its tiny preset, lowers forget_Q_A_Prob under
arm=clean and arm=mpu (kappa 0.01, m 2).

The slow variants (`-m slow`) run all nine algorithms in both arms; the fast variant runs one short
configuration. Both use the prepared models of the session (built into $MPU_CACHE_DIR once, if needed).
"""
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mpu_cli.config import CONF_DIR
from mpu_cli.run.pipeline import run

pytestmark = pytest.mark.integration  # real processes / the prepared models

ALGORITHMS = ["ga", "graddiff", "npo", "simnpo", "idkdpo", "undial", "wga", "satimp", "rmu"]
QUICK = ["eval.metrics=quick", "eval.max_new_tokens=16", "seed=0", "kappa=0.01", "m=2"]


def _cache_dir() -> str:
    return os.environ.get("MPU_CACHE_DIR", "~/.cache/mpu-cli")


def _run(tmp_path: Path, overrides: list[str]) -> dict:
    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose("config", overrides=QUICK + [f"prepare.cache_dir={_cache_dir()}"] + overrides)
    return run(cfg, tmp_path / "_".join(o.replace("/", "-") for o in overrides))


def _assert_forgets(row: dict) -> None:
    assert row["forget_Q_A_Prob"] < row["target_forget_Q_A_Prob"] - 0.05, row
    # ... without destroying the model: retain keeps most of the target's probability.
    assert row["retain_Q_A_Prob"] > 0.5 * row["target_retain_Q_A_Prob"], row


def test_one_algorithm_forgets_fast(tmp_path, prepared_models):
    """Both arms through the runner's unlearning loop (server + client), scored by forget_Q_A_Prob's
    teacher-forced definition only (no generation): GradAscent on forget01, 3 steps."""
    import torch

    from mpu_cli.data.formatting import pad_id
    from mpu_cli.data.tofu import load_split
    from mpu_cli.evals.tofu import forget_prob
    from mpu_cli.models.io import load_model, load_state_into, load_tokenizer, resolve_dtype
    from mpu_cli.models.prepare import encode_rows, prepare_models
    from mpu_cli.run.pipeline import public_skeleton, unlearn
    from mpu_cli.run.settings import chat_format

    probs = {}
    for arm in ("clean", "mpu"):
        with initialize_config_dir(CONF_DIR, version_base=None):
            cfg = compose("config", overrides=QUICK + [
                f"prepare.cache_dir={_cache_dir()}", "algorithm=ga", "data.split=forget01", f"arm={arm}",
                "client.epochs=3", "client.lr=1.0e-3"])
        prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
        tok, fmt, dtype = load_tokenizer(prepared.tokenizer), chat_format(cfg.model), resolve_dtype(cfg.model.dtype)
        forget = encode_rows(tok, load_split(cfg.data.source, cfg.data.split), fmt)
        if "target" not in probs:
            probs["target"] = forget_prob(load_model(prepared.target, dtype), forget, pad_id(tok))
        theta, _ = unlearn(cfg, tmp_path / arm, prepared, tok, dtype)
        model = public_skeleton(prepared.target, dtype)
        load_state_into(model, theta)
        with torch.no_grad():
            probs[arm] = forget_prob(model.eval(), forget, pad_id(tok))
    assert probs["clean"] < probs["target"] - 0.05 and probs["mpu"] < probs["target"] - 0.05, probs


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["clean", "mpu"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_forgets(tmp_path, algorithm, arm):
    row = _run(tmp_path, [f"algorithm={algorithm}", f"arm={arm}"])
    assert row["algorithm"] == algorithm
    _assert_forgets(row)
