"""The arm objects (mpu/arms.py): the variant files are named after them, the run-folder tags, report names and
labels are the strings runs have always had, and the config and the server refuse a bad m with one rule."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from mpu_cli.config import CONF_DIR, ConfigError, arm_tag
from mpu_cli.mpu.arms import ARMS, BASELINE, NOISY, arm_label, arm_name, arm_of, name_order

VARIANTS = sorted(p.stem for p in (Path(CONF_DIR) / "variant").glob("*.yaml"))


def test_every_variant_file_is_named_after_the_arm_it_composes_and_covers_every_arm(group_configs):
    arms = set()
    for name in VARIANTS:
        cfg = group_configs["variant", name]
        s = cfg.server
        assert arm_of(cfg.arm).variant(cfg.kappa, cfg.m, s.alpha_schedule, s.noised_alpha) == name
        arms.add(cfg.arm)
    assert arms == set(ARMS)


@pytest.mark.parametrize(("arm", "kappa", "m", "schedule", "alpha", "tag"), [
    ("clean", 0.1, 4, "pow2", "max", "clean"),
    ("noised", 0.1, 2, "linear", "one", "noised_k0.1"),
    ("noised", 1.0, 4, "pow2", "one", "noised_k1.0"),
    ("noised", 1.0, 2, "linear", "mean", "noised_k1.0_amean_m2"),
    ("noised", 0.1, 4, "random", "max", "noised_k0.1_amax_m4_random"),
    ("mpu", 0.01, 2, "linear", "one", "mpu_k0.01_m2"),
    ("mpu", 1.0, 4, "pow2", "mean", "mpu_k1.0_m4_pow2"),
])
def test_run_folder_tags_are_the_strings_runs_have_always_had(arm, kappa, m, schedule, alpha, tag):
    assert arm_tag(arm, kappa, m, schedule, alpha) == tag


def test_an_unknown_arm_has_no_tag_and_names_the_arms():
    with pytest.raises(ValueError, match=r"arm='dp' is not one of \['clean', 'noised', 'mpu'\]"):
        arm_tag("dp", 0.1, 2)


NAN = math.nan


@pytest.mark.parametrize(("row", "name", "label"), [
    ({"arm": "clean", "kappa": 0.0, "m": 1, "server.alpha_schedule": None}, "clean", "clean"),
    ({"arm": "noised", "kappa": 0.1, "m": 1, "server.noised_alpha": NAN}, "noised", "noised κ=0.1"),
    ({"arm": "noised", "kappa": 1.0, "m": 2, "server.alpha_schedule": "linear", "server.noised_alpha": "mean"},
     "noised α=mean(m=2)", "noised κ=1 α=mean(m=2)"),
    ({"arm": "noised", "kappa": 1.0, "m": 4.0, "server.alpha_schedule": "pow2", "server.noised_alpha": "max"},
     "noised α=max(m=4) pow2", "noised κ=1 α=max(m=4) pow2"),
    ({"arm": "mpu", "kappa": 0.1, "m": 2, "server.alpha_schedule": NAN}, "mpu m=2", "mpu κ=0.1 m=2"),
    ({"arm": "mpu", "kappa": 0.01, "m": 4, "server.alpha_schedule": "random"}, "mpu m=4 random",
     "mpu κ=0.01 m=4 random"),
])
def test_report_names_and_labels(row, name, label):
    assert (arm_name(row), arm_label(row)) == (name, label)


def test_results_record_the_effective_kappa_and_m_and_the_copies_published():
    clean, noised, mpu = (ARMS[a] for a in ("clean", "noised", "mpu"))
    assert (clean.effective_kappa(0.1), clean.effective_m(4, "one"), clean.copies(4)) == (0.0, 1, 1)
    assert (noised.effective_kappa(0.1), noised.effective_m(4, "one"), noised.copies(4)) == (0.1, 1, 1)
    assert (noised.effective_m(3, "mean"), noised.copies(3)) == (3, 1)
    assert (mpu.effective_kappa(0.1), mpu.effective_m(4, "one"), mpu.copies(4)) == (0.1, 4, 4)
    assert [a.name for a in ARMS.values() if a.zero_sum] == [a.name for a in ARMS.values() if a.reparameterized] \
        == ["mpu"]
    assert (BASELINE, NOISY) == ("clean", ("noised", "mpu"))


def test_the_noised_copy_takes_one_alpha_of_the_m_drawn():
    noised, mpu = ARMS["noised"], ARMS["mpu"]
    drawn = [1.0, 1.5, 2.0]
    assert [noised.draws_alphas(a) for a in ("one", "mean", "max")] == [False, True, True]
    assert [noised.copy_alphas(drawn, a) for a in ("mean", "max")] == [[1.5], [2.0]]
    assert noised.copy_alphas([1.0], "one") == [1.0]
    assert mpu.draws_alphas("one") and mpu.copy_alphas(drawn, "one") == drawn
    assert not ARMS["clean"].draws_alphas("mean")


@pytest.mark.parametrize(("overrides", "server_kwargs"), [
    (["arm=mpu", "m=1"], {"arm": "mpu", "m": 1}),
    (["arm=noised", "m=1", "server.noised_alpha=max"], {"arm": "noised", "m": 1, "noised_alpha": "max"}),
])
def test_the_config_and_the_server_refuse_a_bad_m_with_the_same_rule(overrides, server_kwargs):
    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.mpu.server import ServerConfig

    with pytest.raises(ConfigError) as from_config:
        check_overrides(overrides, CONF_DIR)
    with pytest.raises(ValueError) as from_server:
        ServerConfig(**server_kwargs)
    assert str(from_config.value) == str(from_server.value)
    assert "m=1" in str(from_server.value) and ">= 2" in str(from_server.value)


def test_reports_order_and_colour_the_arms():
    from mpu_cli.report.breakmap import _colors, _order
    from mpu_cli.report.plots import _color, _series_order

    names = ["mpu m=4 pow2", "noised α=max(m=2)", "mpu m=2", "noised", "clean", "noised α=mean(m=2)"]
    assert _order(names) == ["clean", "noised", "noised α=mean(m=2)", "noised α=max(m=2)", "mpu m=2", "mpu m=4 pow2"]
    assert sorted(names, key=name_order) == _order(names)
    assert _series_order(["mpu κ=1 m=2", "noised κ=1", "clean", "mpu κ=0.1 m=2"]) == \
        ["clean", "noised κ=1", "mpu κ=0.1 m=2", "mpu κ=1 m=2"]
    assert _color("clean", 0, 1) == "tab:green"
    import matplotlib

    assert _color("noised κ=1", 1, 3) == matplotlib.colormaps["Reds"](0.7)
    assert _color("mpu κ=1 m=2", 0, 3) == matplotlib.colormaps["Blues"](0.45)
    assert _colors(_order(names)[1:]) == {"noised": "tab:red", "noised α=mean(m=2)": "tab:orange",
                                          "noised α=max(m=2)": "tab:brown", "mpu m=2": "tab:blue",
                                          "mpu m=4 pow2": "navy"}


