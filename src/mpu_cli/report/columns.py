"""What the reports know about the metrics: the headline ones, which way is better, what deg_avg averages."""

from __future__ import annotations

HEADLINE = (
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "model_utility",
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "forget_quality",
    "forget_truth_ratio",
    "privleak",
    "extraction_strength",
    "exact_memorization",
    # MUSE
    "forget_verbmem_ROUGE",
    "forget_knowmem_ROUGE",
    "retain_knowmem_ROUGE",
)
# The paper's "average degradation" on TOFU; on MUSE the mean over its three ROUGE metrics.
AVG_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility")
MUSE_AVG_METRICS = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE")


def avg_metrics(available) -> tuple[str, ...]:
    """The metrics deg_avg averages, given the metric names that have values: TOFU's, or MUSE's when none of
    TOFU's is there and one of MUSE's is."""
    has = lambda names: any(m in available for m in names)
    return MUSE_AVG_METRICS if has(MUSE_AVG_METRICS) and not has(AVG_METRICS) else AVG_METRICS

LOWER, HIGHER, ABS = "lower", "higher", "abs"  # lower is better | higher is better | closer to 0 is better
DIRECTIONS = {
    "forget_Q_A_Prob": LOWER,
    "forget_Q_A_ROUGE": LOWER,
    "extraction_strength": LOWER,
    "exact_memorization": LOWER,
    "model_utility": HIGHER,
    "forget_quality": HIGHER,
    "retain_Q_A_Prob": HIGHER,
    "retain_Q_A_ROUGE": HIGHER,
    "retain_Truth_Ratio": HIGHER,
    "ra_Q_A_Prob_normalised": HIGHER,
    "ra_Q_A_ROUGE": HIGHER,
    "ra_Truth_Ratio": HIGHER,
    "wf_Q_A_Prob_normalised": HIGHER,
    "wf_Q_A_ROUGE": HIGHER,
    "wf_Truth_Ratio": HIGHER,
    "privleak": ABS,
    "forget_verbmem_ROUGE": LOWER,
    "forget_knowmem_ROUGE": LOWER,
    "retain_knowmem_ROUGE": HIGHER,
}
DIRECTION_WORDS = {LOWER: "lower is better", HIGHER: "higher is better", ABS: "closer to 0 is better"}
