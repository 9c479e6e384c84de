"""Every command's --help describes it and its main keys; every group of mpu-run's help works as group=option."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import RUN_ONLY_GROUPS, group_lines
from mpu_cli.cli.aliases import rewrite
from mpu_cli.cli.help import config_help, entries
from mpu_cli.config import CONF_DIR, register_configs
from mpu_cli.run.checks import validate

CONF = Path(CONF_DIR)


def _compose(overrides: list[str], config_name: str = "config"):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def test_every_setting_of_both_schemas_has_a_meaning_and_every_number_a_range():
    from mpu_cli.config import SCHEMAS
    from mpu_cli.options import accepted_range, leaf_fields, meaning

    seen = 0
    for schema in SCHEMAS.values():
        for name, f, hint in leaf_fields(schema):
            seen += 1
            assert meaning(f), f"{name} has no meaning (option(help=...))"
            numeric = {int, float} & {hint, *getattr(hint, "__args__", ())}
            assert bool(numeric) == (accepted_range(f) is not None), f"{name}: a number needs its accepted range"
    assert seen > 60  # the walk reached the nested settings


def test_run_help_lists_every_group_and_main_key_and_each_key_exists():
    text = config_help("config", CONF_DIR)
    assert set(group_lines(text)) == {"model", "data", "algorithm", *RUN_ONLY_GROUPS}
    for key in ("arm=mpu", "kappa=0.01", "m=2", "rounds=1", "seed=null", "client.lr", "client.epochs",
                "server.alpha_schedule=linear", "eval.metrics=all", "prepare.cache_dir", "save_model=false"):
        assert f"  {key}" in text, key
    assert "mpu_k0.1_m3" in text and "forget05" in text and "deepspeed_zero3" in text
    cfg = _compose([])
    groups, keys = entries("config")
    assert [g.name for g in groups] == ["model", "data", "algorithm", "accelerate", "launcher", "experiment",
                                        "tofu_split", "variant"]
    for k in keys:
        assert OmegaConf.select(cfg, k.name, default="<absent>") != "<absent>", k.name
        assert k.meaning, k.name
    assert {k.name for k in keys} >= {"server.eta", "client.max_grad_norm", "prepare.target_min_prob"}


def test_eval_help_lists_only_its_own_groups():
    text = config_help("eval", CONF_DIR)
    assert group_lines(text) == ["model", "data"]
    assert "model_path (required)" in text and "eval.batch_size=16" in text
    for group in RUN_ONLY_GROUPS:
        assert f"{group}=" not in text and f"  {group} " not in text


@pytest.mark.parametrize(("override", "key", "value"), [
    ("variant=clean", "arm", "clean"), ("variant=mpu_k0.1_m4", "m", 4), ("tofu_split=forget05", "data.split", "forget05"),
    ("accelerate=ddp", "client.accelerate_config", "ddp"),
])
def test_groups_compose_without_a_plus(override, key, value):
    cfg = _compose([override])
    assert OmegaConf.select(cfg, key) == value
    if not override.startswith("tofu_split"):  # its retain model is a Hub name: checked offline, refused here
        validate(cfg)


@pytest.mark.parametrize(("override", "near"), [("variant=mpu_k01", "mpu_k0.1"), ("accelerate=dpp", "ddp"),
                                              ("tofu_split=forget5", "forget05")])
def test_an_unknown_option_of_a_new_group_is_refused_with_the_nearest(override, near):
    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import ConfigError

    with pytest.raises(ConfigError, match=rf"is not one of .*did you mean '{near}'"):
        check_overrides([override], CONF_DIR)


def test_presets_combine_and_the_command_line_wins():
    experiment = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))[0]  # whichever presets exist
    cfg = _compose([f"experiment={experiment}", "algorithm=ga", "variant=noised_k0.1", "tofu_split=forget01",
                    "kappa=0.5"])
    assert (cfg.algorithm.name, cfg.arm, cfg.kappa, cfg.data.split) == ("ga", "noised", 0.5, "forget01")
    assert cfg.model.retain.endswith("retain99")


def test_hydras_forms_and_our_own_names_pass_through_untouched():
    """Only open-unlearning's names are rewritten: the append form and names of ours go to Hydra as given."""
    argv = ["-m", "+variant=clean,mpu_k0.1", "experiment=paper_npo", "+foo=1", "~seed"]
    assert rewrite(argv) == (argv, [])


def test_reproduce_sweeps_use_the_plain_group_form():
    for name in ("reproduce_tiny", "reproduce_m", "reproduce_tofu"):
        params = OmegaConf.load(CONF / f"{name}.yaml").hydra.sweeper.params
        assert not [k for k in params if k.startswith("+")], name


def _help_of(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_report_help(capsys):
    from mpu_cli.cli.report import main

    text = _help_of(main, ["--help"], capsys)
    assert "summary.csv" in text and "--no-plots" in text and "95 % t-intervals" in text


def test_audit_help(capsys):
    from mpu_cli.cli.audit import main

    text = _help_of(main, ["--help"], capsys)
    assert text.startswith("mpu-audit: what a curious client")
    for key in ("out=DIR", "b1=true|false", "sweep=true|false", "sweep_kappa=", "sweep_m=", "sweep_perturb="):
        assert key in text, key


@pytest.mark.parametrize("argv", [["--help"], ["init", "--help"], ["publish", "--help"], ["aggregate", "--help"],
                                  ["status", "--help"]])
def test_server_help(argv, capsys):
    from mpu_cli.cli.server import main

    text = " ".join(_help_of(main, argv, capsys).split())  # argparse wraps to the terminal's width
    assert "--state" in text or "init" in text
    if argv[0] == "init":
        for opt in ("--kappa", "--m M", "--arm", "clean | noised | mpu", "--alpha-schedule", "default: 0.01"):
            assert opt in text, opt
    if argv[0] == "--help":
        assert "server party" in text and "publish" in text and "aggregate" in text


@pytest.mark.parametrize("argv", [["--help"], ["unlearn", "--help"]])
def test_client_help(argv, capsys):
    from mpu_cli.cli.client import main

    text = " ".join(_help_of(main, argv, capsys).split())
    assert "client party" in text or "--exchange" in text
    if argv[0] == "unlearn":
        assert "--config" in text and "CLIENT.json" in text and "--copy" in text


