"""TOFU (QA pairs about fictitious authors; data.tofu): its metrics, files, splits and data. The evaluator is
evals.tofu."""
from __future__ import annotations

from mpu_cli.data import tofu as data
from mpu_cli.evals.benchmark import Benchmark, TrainingSet
from mpu_cli.evals.metric_registry import ABS, HIGHER, LOWER, Metric

# The stop criterion of the target's training uses the largest forget split, so one target serves all three.
TARGET_CHECK_SPLIT = "forget10"
# data-set prefix in metric names -> key of the evaluation data
_SETS = {"forget": "forget", "retain": "retain", "ra": "real_authors", "wf": "world_facts"}


def _prob(prefix: str, better: str, headline: int | None = None, deg_avg: bool = False) -> Metric:
    key = _SETS[prefix]
    return Metric(f"{prefix}_Q_A_Prob", better, "prob", key, ((key, "ans"),), headline=headline, deg_avg=deg_avg)


def _rouge(prefix: str, better: str, headline: int | None = None, deg_avg: bool = False) -> Metric:
    key = _SETS[prefix]
    return Metric(f"{prefix}_Q_A_ROUGE", better, "rouge", key, ((key, "gen"),), headline=headline, deg_avg=deg_avg)


def _normalised_prob(prefix: str) -> Metric:
    key = _SETS[prefix]
    return Metric(f"{prefix}_Q_A_Prob_normalised", HIGHER, "normalised_prob", key, ((key, "ans"), (key, "pert")))


def _truth_ratio(name: str, better: str | None, headline: int | None = None) -> Metric:
    key = _SETS[name.split("_", 1)[0]]
    # the forget and retain sets compare with a paraphrased answer, the others with the answer itself
    true = "para" if key in ("forget", "retain") else "ans"
    return Metric(name, better, "truth_ratio", key, ((key, "pert"), (key, true)), headline=headline)


UTILITY_METRICS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)

# In report order. "mia_min_k" is the AUC that privleak is computed from.
METRICS = (
    _prob("forget", LOWER, headline=1, deg_avg=True),
    _rouge("forget", LOWER, headline=2, deg_avg=True),
    _truth_ratio("forget_truth_ratio", None, headline=7),
    Metric("forget_quality", HIGHER, "forget_quality", depends=("forget_truth_ratio",), headline=6),
    _prob("retain", HIGHER, headline=4),
    _rouge("retain", HIGHER, headline=5),
    _truth_ratio("retain_Truth_Ratio", HIGHER),
    _normalised_prob("ra"),
    _rouge("ra", HIGHER),
    _truth_ratio("ra_Truth_Ratio", HIGHER),
    _normalised_prob("wf"),
    _rouge("wf", HIGHER),
    _truth_ratio("wf_Truth_Ratio", HIGHER),
    Metric("model_utility", HIGHER, "model_utility", depends=UTILITY_METRICS, headline=3, deg_avg=True),
    Metric("mia_min_k", None, "min_k", "forget", (("forget", "ans"), ("holdout", "ans"))),
    Metric("privleak", ABS, "privleak", depends=("mia_min_k",), headline=8),
    Metric("extraction_strength", LOWER, "memorization", "forget", (("forget", "ans"),), headline=9),
    Metric("exact_memorization", LOWER, "memorization", "forget", (("forget", "ans"),), headline=10),
)


class Tofu(Benchmark):
    name = "tofu"
    evaluator_class = "mpu_cli.evals.tofu:TofuEvaluator"
    reference_metric = "forget_truth_ratio"
    metrics = METRICS
    quick_metrics = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")
    forget_splits = data.FORGET_SPLITS
    no_retain_split = "null (TOFU's retain split follows data.split)"
    source_layout = "locuslab/TOFU"
    deg_avg_note = "the paper's average degradation"
    forget_utility_axes = (("forget_Q_A_Prob", "model_utility"), ("forget_Q_A_Prob", "retain_Q_A_Prob"))

    def load_eval_data(self, source: str, split: str) -> dict[str, list[dict]]:
        names = data.split_names(split)
        return {
            "forget": data.load_split(source, names["forget_perturbed"]),
            "retain": data.load_split(source, names["retain_perturbed"]),
            "real_authors": data.load_split(source, names["real_authors"]),
            "world_facts": data.load_split(source, names["world_facts"]),
            "holdout": data.load_split(source, names["holdout"]),
        }

    def check_data(self, data_cfg) -> None:
        names = data.split_names(data_cfg.split)
        for name in dict.fromkeys(["full", *names.values()]):
            data.load_split(data_cfg.source, name)
        if data_cfg.source == data.EMBEDDED:
            data.load_public_text(data_cfg.source)

    def client_data(self, tokenizer, fmt, data_cfg, algorithm):
        from mpu_cli.unlearn.client import encode_client_data

        return encode_client_data(tokenizer, fmt, data_cfg["source"], data_cfg["split"], algorithm)

    def public_source(self, data_cfg) -> str:
        return data_cfg.source  # a TOFU source carries its own public text

    def training_set(self, data_cfg, kind: str, tokenizer, fmt) -> TrainingSet:
        """The target learns TOFU's `full` set, the retain model the retain split of data.split."""
        from mpu_cli.data.formatting import encode_rows

        rows = data.load_split(data_cfg.source, "full" if kind == "target" else
                               data.split_names(data_cfg.split)["retain"])
        return TrainingSet(
            key={"kind": kind, "fmt": fmt.__dict__}, digests={"rows": rows},
            examples=lambda: encode_rows(tokenizer, rows, fmt),
            check=lambda: encode_rows(tokenizer, data.load_split(data_cfg.source, TARGET_CHECK_SPLIT), fmt))


TOFU = Tofu()
