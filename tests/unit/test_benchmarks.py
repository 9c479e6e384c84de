"""The shipped benchmarks' declarations hold together: every input a metric needs is in the benchmark's evaluation
data, every metric it depends on is its own, headline places are distinct, and the reports' union of headline
metrics and directions comes from them."""
import pytest

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import resolve

SHIPPED = ("tofu", "muse")


@pytest.mark.parametrize("name", SHIPPED)
def test_declarations_hold_together(name):
    bench = benchmarks.named(name)
    data = bench.load_eval_data("embedded", bench.forget_splits[0])
    needed = {key for m in bench.metrics for key, _ in m.needs} | {m.on for m in bench.metrics if m.on}
    assert needed <= set(data), sorted(needed - set(data))
    assert all(d in bench.metric_names for m in bench.metrics for d in m.depends)
    places = [m.headline for m in bench.metrics if m.headline is not None]
    assert len(places) == len(set(places))
    assert set(bench.deg_avg) <= set(bench.headline) and set(bench.quick_metrics) <= set(bench.metric_names)
    assert bench.reference_metric in bench.metric_names
    assert all(a in bench.metric_names and b in bench.metric_names for a, b in bench.forget_utility_axes)


def test_resolve_adds_what_a_metric_is_computed_from_in_report_order():
    tofu = benchmarks.named("tofu")
    assert resolve(tofu.metrics, ["privleak", "forget_Q_A_Prob"]) == ["forget_Q_A_Prob", "mia_min_k", "privleak"]
    with pytest.raises(ValueError, match="unknown metric 'nope'; accepted: forget_Q_A_Prob"):
        resolve(tofu.metrics, "nope")


def test_results_rows_and_folders_name_their_benchmark(tmp_path):
    assert benchmarks.of_row({"data.benchmark": "muse"}).name == "muse"
    assert benchmarks.of_row({}).name == benchmarks.DEFAULT  # rows from before the key
    assert benchmarks.of_folder(tmp_path) is None
    (tmp_path / "MUSE_SUMMARY.json").write_text("{}")
    assert benchmarks.of_folder(tmp_path).name == "muse"
    assert benchmarks.headline()[:3] == ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility")
    assert benchmarks.directions()["retain_knowmem_ROUGE"] == "higher"
