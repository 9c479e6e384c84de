"""MUSE (raw text: news articles or books; data.muse): its metrics, files, splits and data. The evaluator is
evals.muse."""
from __future__ import annotations

from mpu_cli.data import muse as data
from mpu_cli.evals.benchmark import Benchmark, TrainingSet
from mpu_cli.evals.metric_registry import ABS, HIGHER, LOWER, Metric

DEFAULT_RETAIN_SPLIT = "retain1"  # the client's retain corpus when data.retain_split is null


def _knowmem(side: str, better: str, headline: int) -> Metric:
    return Metric(f"{side}_knowmem_ROUGE", better, on=f"{side}_qa",
                  needs=((f"{side}_qa", "gen"), (f"{side}_qa_icl", "examples")), headline=headline, deg_avg=True)


# In report order. evals.muse computes each by name (no compute table: `kind` is left empty).
METRICS = (
    Metric("forget_verbmem_ROUGE", LOWER, on="verbmem", needs=(("verbmem", "gen"),), headline=1, deg_avg=True),
    _knowmem("forget", LOWER, 2),
    _knowmem("retain", HIGHER, 3),
    Metric("mia_min_k", None, needs=(("privleak_forget", "ans"), ("privleak_holdout", "ans"))),
    Metric("privleak", ABS, depends=("mia_min_k",), headline=4),
    Metric("extraction_strength", LOWER, on="verbmem", needs=(("verbmem", "ans"),), headline=5),
)


class Muse(Benchmark):
    name = "muse"
    evaluator_class = "mpu_cli.evals.muse:MuseEvaluator"
    reference_metric = "mia_min_k"
    metrics = METRICS
    quick_metrics = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE")
    forget_splits = data.FORGET_SPLITS
    retain_splits = data.RETAIN_SPLITS
    extra_eval_modules = ("mpu_cli.data.text",)
    source_layout = "muse-bench/MUSE-News"
    deg_avg_note = "MUSE's three ROUGE metrics"
    forget_utility_axes = (("forget_knowmem_ROUGE", "retain_knowmem_ROUGE"),)

    def eval_settings(self, batch_size: int, max_new_tokens: int, quick: bool, data_cfg=None):
        settings = super().eval_settings(batch_size, max_new_tokens, quick)
        if data_cfg:
            settings.chat_template = bool(data_cfg.get("knowmem_chat_template"))
        return settings

    def load_eval_data(self, source: str, split: str) -> dict[str, list[dict]]:
        return data.eval_sets(source, split)

    def check_data(self, data_cfg) -> None:
        for config, splits in data.LAYOUT.items():
            for split in splits:
                if config != "privleak" or split != "retain":  # privleak/retain: not read by any metric
                    data.load_muse(data_cfg.source, config, split)

    def client_data(self, tokenizer, fmt, data_cfg, algorithm):
        from mpu_cli.unlearn.client import encode_text_client_data

        return encode_text_client_data(tokenizer, fmt.max_length, data_cfg["source"], data_cfg["split"],
                                       data_cfg.get("retain_split") or DEFAULT_RETAIN_SPLIT, algorithm)

    def training_set(self, data_cfg, kind: str, tokenizer, fmt) -> TrainingSet:
        """The target learns the forget and retain documents until its forget chunks reach mean Prob >=
        prepare.target_min_prob; the retrained (retain) model the retain documents only."""
        from mpu_cli.data.text import corpus_chunks
        corpora = data.training_corpora(data_cfg.source, data_cfg.split)
        docs, forget = corpora[kind], corpora["forget"]
        return TrainingSet(
            key={"kind": f"muse-{kind}", "max_length": fmt.max_length}, digests={"docs": docs, "check": forget},
            examples=lambda: corpus_chunks(tokenizer, docs, fmt.max_length),
            check=lambda: corpus_chunks(tokenizer, forget, fmt.max_length))


MUSE = Muse()
