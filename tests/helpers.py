"""Helpers both test layers share: small real models (a bigram LM whose next-token logits are a learnable table),
run folders as mpu-run writes them, the embedded default's recipe, and the shipped MUSE corpus."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from mpu_cli.config import CONF_DIR, MPUConfig, register_configs
from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig
from mpu_cli.models import prepare
from mpu_cli.run import rundir
from mpu_cli.run.settings import chat_format

REPO = Path(__file__).resolve().parents[1]
# The config groups chosen as `group=option` on mpu-run's command line (conf/<group>/<option>.yaml).
CONFIG_GROUPS = ("model", "data", "algorithm", "accelerate", "launcher", "experiment", "tofu_split", "variant")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


class BigramLM(nn.Module):
    """logits[t] = table[input_ids[t]]: every next-token distribution is known and differentiable."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def hand_logp(table: torch.Tensor, prev: int, nxt: int) -> float:
    row = table[prev].tolist()
    return row[nxt] - math.log(sum(math.exp(x) for x in row))


def answer_pairs(ids: list[int], labels: list[int]) -> list[tuple[int, int]]:
    """(previous token, answer token) for every answer position."""
    return [(ids[t - 1], labels[t]) for t in range(1, len(ids)) if labels[t] != -100]


# ---- a hand-made break-map sweep (report/breakmap.py; tests/test_breakmap.py, tests/test_readme_tables.py) ----

SEEDS = (0, 1, 2)
# per-seed offsets of the arm against its clean run: centred on 0 ("= clean") or all well above it
SAME, WORSE = (-0.01, 0.0, 0.01), (0.20, 0.21, 0.22)


def break_map_table(kappas=(0.1, 1.0)):
    """npo: noised matches clean at κ=0.1 and not at κ=1; mpu m=2 differs already at κ=0.1; noised α=mean
    matches at every κ."""
    import pandas as pd

    rows = []
    plan = {("noised", 2, "one"): {0.1: SAME, 1.0: WORSE}, ("mpu", 2, None): {0.1: WORSE, 1.0: WORSE},
            ("noised", 2, "mean"): {0.1: SAME, 1.0: SAME}}
    for seed in SEEDS:
        clean = 0.45 + 0.01 * seed
        rows.append({"run": f"clean_s{seed}", "algorithm": "npo", "arm": "clean", "kappa": 0.0, "m": 1,
                     "seed": seed, "server.noised_alpha": None, "forget_Q_A_Prob": clean, "deg_avg": math.nan,
                     "clean_run": ""})
        for (arm, m, alpha), by_kappa in plan.items():
            for kappa in kappas:
                value = clean + by_kappa[kappa][seed]
                rows.append({"run": f"{arm}{alpha}_k{kappa}_s{seed}", "algorithm": "npo", "arm": arm,
                             "kappa": kappa, "m": m if (arm == "mpu" or alpha != "one") else 1, "seed": seed,
                             "server.alpha_schedule": "linear" if arm == "mpu" or alpha != "one" else None,
                             "server.noised_alpha": alpha, "forget_Q_A_Prob": value,
                             "deg_avg": (value - clean) / clean, "clean_run": f"clean_s{seed}"})
    return pd.DataFrame(rows)


BREAK_KEYS = ["algorithm", "arm", "kappa", "m", "server.noised_alpha"]


def write_run(root: Path, name: str, summary: dict | None, *, status: str = "finished", target: str = "t1",
               summary_file: str = "TOFU_SUMMARY.json", **overrides) -> Path:
    """A run folder as mpu-run writes it, through the runner's own writers: run.json (the resolved config),
    then results.csv, TOFU_SUMMARY.json and COMPLETE; FAILED for a failed run; nothing more when unfinished.
    `overrides` are dotted config keys (arm, kappa, seed, client__lr for client.lr, ...)."""
    from mpu_cli.run.pipeline import result_row

    dotted = [f"{k.replace('__', '.')}={'null' if v is None else v}"
              for k, v in ({"arm": "mpu", "kappa": 0.1, "seed": 0} | overrides).items()]
    cfg = OmegaConf.merge(OmegaConf.structured(MPUConfig), OmegaConf.from_dotlist(dotted))
    run = root / name
    run.mkdir(parents=True)
    rundir.start(cfg, run, "fresh")
    if status == "failed":
        # what mark_failed writes (it writes only into a folder whose lock this process holds)
        error = "round 1/1 copy 1/2: the unlearning loss is nan (non-finite); the run is stopped"
        (run / rundir.FAILED).write_text(error + "\n")
    if status != "finished":
        return run
    (run / summary_file).write_text(json.dumps(summary))
    # results.csv carries stale metric values: the table must read the run's own TOFU_SUMMARY.json
    row = result_row(cfg, {k: -1.0 for k in summary}, {}, target)
    pd.DataFrame([row]).to_csv(run / "results.csv", index=False)
    rundir.finish(run)
    return run


def embedded_default(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return prepare.embedded_base_recipe(cfg.data, cfg.prepare, chat_format(cfg.model)), cfg


RUN_ONLY_GROUPS = ("algorithm", "experiment", "variant", "tofu_split", "accelerate", "launcher")


def group_lines(text: str) -> list[str]:
    """The group names of a help text's "Groups" section."""
    section = text.split("== Groups", 1)[1].split("== Keys", 1)[0]
    return [ln.split()[0] for ln in section.splitlines()[1:] if ln.startswith("  ") and not ln.startswith("   ")]


SHIPPED_MUSE = REPO / "src" / "mpu_cli" / "data" / "embedded_muse"


# articles + quizzes (3 rounds of the split's 2-per-article questions, 11 to a quiz)
MUSE_LAYOUT = {
    "raw/forget.jsonl": (16 + 9, ("text",)),
    "raw/retain1.jsonl": (32 + 18, ("text",)),
    "raw/retain2.jsonl": (16 + 9, ("text",)),
    "raw/holdout.jsonl": (16, ("text",)),
    "knowmem/forget_qa.jsonl": (32, ("question", "answer")),
    "knowmem/retain_qa.jsonl": (32, ("question", "answer")),
    "knowmem/forget_qa_icl.jsonl": (1, ("question", "answer")),
    "knowmem/retain_qa_icl.jsonl": (1, ("question", "answer")),
    "verbmem/forget.jsonl": (16, ("prompt", "gt")),
    "privleak/forget.jsonl": (16, ("text",)),
    "privleak/retain.jsonl": (16, ("text",)),
    "privleak/holdout.jsonl": (16, ("text",)),
}


def muse_rows(folder: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (folder / rel).read_text(encoding="utf-8").splitlines()]


def muse_texts(folder: Path, split: str) -> list[str]:
    return [r["text"] for r in muse_rows(folder, f"raw/{split}.jsonl")]


# ---- small GQA models with a known fine-tuning difference (the audit and the server's noise) ----------------------

SMALL = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32}
MODELS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def target_and_base(kind: str = "llama", finetune: float = 0.02):
    """A small random GQA model θ and its public base = θ minus a small "fine-tuning" difference."""
    config_cls, model_cls = MODELS[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**SMALL))
    g = torch.Generator().manual_seed(1)
    theta, base = {}, {}
    for name, p in model.state_dict().items():
        if "norm" in name:
            w = 1 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            w = 0.15 * torch.randn(p.shape, generator=g)
        theta[name] = w
        base[name] = w - finetune * torch.randn(p.shape, generator=g)
    return theta, base, ModelLayout.from_hf_config(model.config)


def publish(theta, base, layout, **cfg):
    server = MPUServer(theta, layout, ServerConfig(seed=0, **cfg), base=base)
    return server, server.publish()
