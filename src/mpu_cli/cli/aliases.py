"""open-unlearning's command-line vocabulary, read as ours (standard library only: it runs before Hydra).

Each alias is rewritten to its key and said in one note line on stderr, so a user learns our name once:
`trainer=NPO` → `algorithm=npo`, `forget_split=forget05` → `data.split=forget05`, `task_name=x` → `run_id=x`,
algorithm names as open-unlearning spells them (GradAscent, GradDiff, NPO, SimNPO, DPO / IdkDPO, UNDIAL, WGA,
SatImp, RMU; any case), its model config names (`model=Llama-3.2-1B-Instruct`). `retain_split=` and
`holdout_split=` follow from the forget split here: they are accepted when they agree with it.
"""
from __future__ import annotations

from pathlib import Path

from mpu_cli.evals import benchmarks  # standard library only, like this module

OPEN_UNLEARNING_ALGORITHMS = {  # their trainer names as they spell them -> ours
    "GradAscent": "ga", "GradDiff": "graddiff", "NPO": "npo", "SimNPO": "simnpo", "DPO": "idkdpo",
    "IdkDPO": "idkdpo", "UNDIAL": "undial", "WGA": "wga", "SatImp": "satimp", "RMU": "rmu",
}
ALGORITHM_NAMES = {k.lower(): v for k, v in OPEN_UNLEARNING_ALGORITHMS.items()} | {
    v: v for v in OPEN_UNLEARNING_ALGORITHMS.values()}  # any case of theirs or ours
KEYS = {"trainer": "algorithm", "forget_split": "data.split", "task_name": "run_id"}
DERIVED = {"retain_split": "retain", "holdout_split": "holdout"}  # TOFU: ours follow from data.split

MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"


class AliasError(ValueError):
    pass


def _derived(kind: str, forget_split: str) -> str:
    pct = forget_split.removeprefix("forget")
    return {"retain": f"retain{100 - int(pct):02d}", "holdout": f"holdout{pct}"}[kind] if pct.isdigit() else ""


def _values(value: str, fn) -> str:
    return ",".join(fn(v) for v in value.split(","))


def rewrite(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv with aliases replaced, one note per alias used); AliasError for a derived split that disagrees."""
    out, notes, derived = [], [], []
    models = {p.stem.lower(): p.stem for p in MODEL_DIR.glob("*.yaml")}
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+~")
        if not sep or arg.startswith("-"):
            out.append(arg)
            continue
        new_key = KEYS.get(bare, bare)
        new_value = value
        if new_key == "algorithm":
            new_value = _values(value, lambda v: ALGORITHM_NAMES.get(v.lower(), v))
        elif new_key == "model":
            new_value = _values(value, lambda v: models.get(v.lower(), v))
        if bare == "retain_split" and value in benchmarks.retain_splits():  # a retain corpus of its own (MUSE's)
            notes.append(f"mpu-run: note: {bare}={value} is read as data.retain_split={value} (open-unlearning's name)")
            out.append(f"data.retain_split={value}")
            continue
        if bare in DERIVED:
            derived.append((bare, value))
            continue
        if (new_key, new_value) != (bare, value):
            notes.append(f"mpu-run: note: {bare}={value} is read as {new_key}={new_value} (open-unlearning's name)")
        out.append(f"{key[: len(key) - len(bare)]}{new_key}={new_value}")
    split = next((a.partition("=")[2] for a in out if a.lstrip("+~").startswith("data.split=")), "forget10")
    for bare, value in derived:
        want = _derived(DERIVED[bare], split)
        if value != want:
            raise AliasError(f"{bare}={value} does not match the forget split {split!r}: here it follows from "
                             f"data.split ({want or 'a forgetNN split'}); pass only data.split= (or forget_split=)")
        notes.append(f"mpu-run: note: {bare}={value} follows from data.split={split} here; nothing to set")
    return out, notes
