"""Write a smaller TOFU-shaped data set in locuslab/TOFU's folder layout (`<config>.json`, JSON lines).

`full` keeps only the authors that some evaluation set asks about: those of the largest forget split
(forget10) and those behind `retain_perturbed`; `retainXX` is that `full` minus `forgetXX`. Every other
config (the forget / perturbed / real authors / world facts / holdout sets) is copied unchanged, so the
evaluation is the same as on the source while fine-tuning a target / retain model costs a fraction
(embedded: 80 instead of 400 QA in `full`). Used for CPU runs of real pretrained models (model=smollm2-135m):

    python scripts/make_tofu_subset.py /tmp/tofu-small            # from the embedded data set
    python scripts/make_tofu_subset.py /tmp/tofu-small --source /data/TOFU
    mpu-run model=smollm2-135m data=tofu data.source=/tmp/tofu-small
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mpu_cli.data.tofu import EMBEDDED, FORGET_SPLITS, TOFU_CONFIGS, load_split, split_names


def subset(source: str) -> dict[str, list[dict]]:
    data = {c: load_split(source, c) for c in TOFU_CONFIGS}
    keep = {r["question"] for r in data["retain_perturbed"]} | {r["question"] for r in data[FORGET_SPLITS[-1]]}
    data["full"] = [r for r in data["full"] if r["question"] in keep]
    for split in FORGET_SPLITS:
        forget = {r["question"] for r in data[split]}
        data[split_names(split)["retain"]] = [r for r in data["full"] if r["question"] not in forget]
    return data


def write_folder(data: dict[str, list[dict]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for config, rows in data.items():
        tmp = out / f".{config}.json.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out / f"{config}.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (created; existing config files are replaced)")
    ap.add_argument("--source", default=EMBEDDED, help="'embedded' (default) or a folder laid out like TOFU")
    args = ap.parse_args()
    data = subset(args.source)
    write_folder(data, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{c}={len(data[c])}" for c in ("full", "retain90", "forget10")))


if __name__ == "__main__":
    main()
