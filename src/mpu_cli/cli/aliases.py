"""open-unlearning's command-line vocabulary, read as ours (standard library only: it runs before Hydra).

Each alias is rewritten to its key and said in one note line on stderr, so a user learns our name once:
`trainer=NPO` → `algorithm=npo`, `forget_split=forget05` → `data.split=forget05`, `task_name=x` → `run_id=x`,
algorithm names as open-unlearning spells them (GradAscent, GradDiff, NPO, SimNPO, DPO / IdkDPO, UNDIAL, WGA,
SatImp, RMU; any case), its model config names (`model=Llama-3.2-1B-Instruct`). `retain_split=` and
`holdout_split=` follow from the forget split here: they are accepted when they agree with it.
Earlier preset names of our own are read the same way: `experiment=paper_<alg>` → `experiment=paper
algorithm=<alg>` (the paper's schedule is one table now), `experiment=tiny_<alg>` → `algorithm=<alg>` (the
embedded model's presets apply to an algorithm named alone).
"""
from __future__ import annotations

from pathlib import Path

ALGORITHM_NAMES = {
    "gradascent": "ga", "ga": "ga", "graddiff": "graddiff", "npo": "npo", "simnpo": "simnpo", "dpo": "idkdpo",
    "idkdpo": "idkdpo", "undial": "undial", "wga": "wga", "satimp": "satimp", "rmu": "rmu",
}
KEYS = {"trainer": "algorithm", "forget_split": "data.split", "task_name": "run_id"}
DERIVED = {"retain_split": "retain", "holdout_split": "holdout"}  # ours follow from data.split
MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"


class AliasError(ValueError):
    pass


def _derived(kind: str, forget_split: str) -> str:
    pct = forget_split.removeprefix("forget")
    return {"retain": f"retain{100 - int(pct):02d}", "holdout": f"holdout{pct}"}[kind] if pct.isdigit() else ""


def _values(value: str, fn) -> str:
    return ",".join(fn(v) for v in value.split(","))


def _preset(value: str) -> list[str] | None:
    """experiment=paper_<alg>[,…] / tiny_<alg>[,…] as today's overrides, None when it is not such a name."""
    families = {v.partition("_")[0] for v in value.split(",")}
    algorithms = [v.partition("_")[2] for v in value.split(",")]
    if not families <= {"paper", "tiny"} or not all(a in ALGORITHM_NAMES for a in algorithms):
        return None
    if len(families) > 1:
        raise AliasError(f"experiment={value} mixes the paper and tiny presets; sweep them separately "
                         f"(experiment=paper algorithm=… and algorithm=…)")
    algorithm = f"algorithm={','.join(algorithms)}"
    return ["experiment=paper", algorithm] if families == {"paper"} else [algorithm]


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
        if bare in DERIVED:
            derived.append((bare, value))
            continue
        if bare == "experiment" and (preset := _preset(value)) is not None:
            notes.append(f"mpu-run: note: {bare}={value} is read as {' '.join(preset)}")
            out += preset
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
