"""open-unlearning's command-line vocabulary, read as ours (standard library only: it runs before Hydra).

Each alias is rewritten to its key and said in one note line on stderr, so a user learns our name once:
`trainer=NPO` → `algorithm=npo`, `forget_split=forget05` → `data.split=forget05`, `task_name=x` → `run_id=x`,
algorithm names as open-unlearning spells them (GradAscent, GradDiff, NPO, SimNPO, DPO / IdkDPO, UNDIAL, WGA,
SatImp, RMU; any case), its model config names (`model=Llama-3.2-1B-Instruct`). `retain_split=` and
`holdout_split=` follow from the forget split here: they are accepted when they agree with it. A group of the
root config's defaults list given with Hydra's append prefix (`+variant=clean`, the form these groups once
needed) is read as `variant=clean`: Hydra itself would refuse to append a group that is already listed.
Earlier preset names of our own are read the same way: `experiment=paper_<alg>` → `experiment=paper
algorithm=<alg>` (the paper's schedule is one table now), `experiment=tiny_<alg>` → `algorithm=<alg>` (the
embedded model's presets apply to an algorithm named alone).
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
ROOT_CONFIG = MODEL_DIR.parent / "config.yaml"


def default_groups() -> set[str]:
    """The groups of the root config's defaults list, as mpu-run's help reads them."""
    from mpu_cli.cli.help import parse

    return {g.name for g in parse(ROOT_CONFIG.read_text())[0]}


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
    groups = default_groups()
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+~")
        if not sep or arg.startswith("-"):
            out.append(arg)
            continue
        if key == f"+{bare}" and bare in groups:
            notes.append(f"mpu-run: note: {arg} is read as {bare}={value} ({bare} is a group of the defaults "
                         "list: no + needed)")
            key = bare
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
