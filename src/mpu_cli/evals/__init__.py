"""Evaluation: the benchmark registry (benchmarks), the metric registry, metric math (metrics), batched model
passes (batched) and one evaluator per benchmark (tofu, muse) on a shared base (evaluator)."""
