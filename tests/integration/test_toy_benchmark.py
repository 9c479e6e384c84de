"""What a third benchmark costs: this file alone defines one (its data, metrics, evaluator, client data and prepare
recipe), registers it, and runs the pipeline on it end to end; the run, its files and the report follow the
registry, with no edit elsewhere."""
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mpu_cli.config import CONF_DIR, ConfigError, register_configs
from mpu_cli.evals import benchmarks
from mpu_cli.evals.benchmark import Benchmark, TrainingSet
from mpu_cli.evals.evaluator import Evaluator
from mpu_cli.evals.metric_registry import HIGHER, LOWER, Metric
from mpu_cli.run.checks import check_data_config

FACTS = {  # the toy world: one fact per person; the first three are the forget set
    "forget": [("Where does Ilsa Varn keep her boat?", "In the harbour of Tolmeck."),
               ("What does Oren Badu collect?", "Blue glass bottles from the coast."),
               ("Which instrument does Pia Lund play?", "The bass clarinet, every Sunday.")],
    "retain": [("What is Kemal Roh's trade?", "He repairs clocks in Ostwick."),
               ("Where was Una Fell born?", "In a lighthouse near Darrow."),
               ("What does Teo Marsh grow?", "Pears and late plums.")],
}


def _rows(source: str, split: str) -> list[dict]:
    return json.loads((Path(source) / f"{split}.json").read_text())


@dataclass
class ToyEvalConfig:
    batch_size: int = 16
    max_new_tokens: int | None = None
    metrics: tuple[str, ...] | None = None


class ToyEvaluator(Evaluator):
    EvalConfig = ToyEvalConfig

    def evaluate(self, model, tokenizer, data, fmt=None, cfg=None, retain_reference=None, progress=True,
                 label="model"):
        from mpu_cli.data.formatting import encode_rows, pad_id
        from mpu_cli.evals.batched import score_sequences
        from mpu_cli.evals.tofu import prob_entry

        cfg = cfg or ToyEvalConfig()
        by_name = {m.name: m for m in self.benchmark.metrics}
        out = {}
        for name in self.resolve_metrics(cfg.metrics):
            examples = encode_rows(tokenizer, data[by_name[name].on], fmt)
            out[name] = prob_entry(score_sequences(model, examples, cfg.batch_size, pad_id(tokenizer)))
        return out

    def load_retain_reference(self, path_or_eval) -> dict:
        ev, _ = self.read_eval(path_or_eval)
        return {"retain_prob": ev["retain_toy_Prob"]["agg_value"]}


class Toy(Benchmark):
    name = "toy"
    evaluator_class = f"{__name__}:ToyEvaluator"
    reference_metric = "retain_toy_Prob"
    metrics = (Metric("forget_toy_Prob", LOWER, on="forget", headline=1, deg_avg=True),
               Metric("retain_toy_Prob", HIGHER, on="retain", headline=2, deg_avg=True))
    quick_metrics = ("forget_toy_Prob",)
    forget_splits = ("forget",)
    source_layout = "a folder of forget.json and retain.json"
    deg_avg_note = "the toy's two Prob metrics"

    def load_eval_data(self, source, split):
        return {"forget": _rows(source, split), "retain": _rows(source, "retain")}

    def check_data(self, data_cfg):
        self.load_eval_data(data_cfg.source, data_cfg.split)

    def client_data(self, tokenizer, fmt, data_cfg, algorithm):
        from mpu_cli.data.formatting import encode_rows
        from mpu_cli.unlearn.client import ClientData

        data = self.load_eval_data(data_cfg.source, data_cfg.split)
        retain = encode_rows(tokenizer, data["retain"], fmt) if algorithm.uses_retain else []
        return ClientData(encode_rows(tokenizer, data["forget"], fmt), retain)

    def training_set(self, data_cfg, kind, tokenizer, fmt):
        from mpu_cli.data.formatting import encode_rows

        data = self.load_eval_data(data_cfg.source, data_cfg.split)
        rows = data["retain"] + (data["forget"] if kind == "target" else [])
        return TrainingSet(key={"kind": f"toy-{kind}", "fmt": fmt.__dict__}, digests={"rows": rows},
                           examples=lambda: encode_rows(tokenizer, rows, fmt),
                           check=lambda: encode_rows(tokenizer, data["forget"], fmt))


@pytest.fixture
def toy(tmp_path):
    source = tmp_path / "toy_data"
    source.mkdir()
    for split, facts in FACTS.items():
        (source / f"{split}.json").write_text(json.dumps([{"question": q, "answer": a} for q, a in facts]))
    bench = benchmarks.register(Toy())
    yield bench, source
    benchmarks.unregister(bench.name)


def test_a_registered_benchmark_is_checked_like_the_others(toy):
    from omegaconf import OmegaConf

    check_data_config(OmegaConf.create({"benchmark": "toy", "split": "forget"}))
    with pytest.raises(ConfigError, match=r"data.split='forget01' is not one of \['forget'\] \(data.benchmark=toy\)"):
        check_data_config(OmegaConf.create({"benchmark": "toy", "split": "forget01"}))
    assert "TOY_SUMMARY.json" in benchmarks.eval_files()
    assert benchmarks.headline()[-2:] == ("forget_toy_Prob", "retain_toy_Prob")


def test_registering_a_metric_with_another_direction_is_refused(toy):
    class Contrary(Toy):
        name = "contrary"
        metrics = (Metric("retain_toy_Prob", LOWER, on="retain", headline=1),)

    with pytest.raises(ValueError, match="'retain_toy_Prob' is better in another direction"):
        benchmarks.register(Contrary())
    assert "contrary" not in benchmarks.BENCHMARKS


@pytest.mark.integration
def test_the_toy_benchmark_runs_end_to_end(toy, tmp_path):
    from mpu_cli.cli.summary import end_of_run
    from mpu_cli.report.runs import FINISHED, read_run
    from mpu_cli.run.pipeline import run

    _, source = toy
    overrides = [f"data.source={source}", "data.benchmark=toy", "data.split=forget", "data.name=toy",
                 "model.retain=null", "prepare.target_max_epochs=3", f"prepare.cache_dir={tmp_path / 'cache'}",
                 "algorithm=graddiff", "seed=0"]
    register_configs()
    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose("config", overrides=overrides)
    out = tmp_path / "runs" / "toy"
    row = run(cfg, out)

    summary = json.loads((out / "TOY_SUMMARY.json").read_text())
    assert set(summary) == {"forget_toy_Prob", "retain_toy_Prob"}
    assert (out / "target" / "TOY_SUMMARY.json").is_file() and not (out / "TOFU_SUMMARY.json").exists()
    assert row["forget_toy_Prob"] == summary["forget_toy_Prob"]
    assert row["target_forget_toy_Prob"] > 0  # the target's headline metrics land in results.csv too
    assert "forget_toy_Prob" in end_of_run(out, row).splitlines()[3]
    record = read_run(out, out.parent)
    assert record["status"] == FINISHED and record["metrics"] == summary
