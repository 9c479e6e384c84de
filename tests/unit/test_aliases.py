"""open-unlearning's names on the command line map to ours; unknown values get the nearest name suggested."""
import pytest

from mpu_cli.cli.aliases import AliasError, rewrite
from mpu_cli.config import did_you_mean


@pytest.mark.parametrize(("given", "expected"), [
    ("trainer=NPO", "algorithm=npo"), ("algorithm=GradAscent", "algorithm=ga"), ("algorithm=GradDiff", "algorithm=graddiff"),
    ("algorithm=SimNPO", "algorithm=simnpo"), ("algorithm=DPO", "algorithm=idkdpo"), ("algorithm=IdkDPO", "algorithm=idkdpo"),
    ("algorithm=UNDIAL", "algorithm=undial"), ("algorithm=WGA", "algorithm=wga"), ("algorithm=SatImp", "algorithm=satimp"),
    ("algorithm=RMU", "algorithm=rmu"), ("forget_split=forget05", "data.split=forget05"), ("task_name=foo", "run_id=foo"),
    ("model=Llama-3.2-1B-Instruct", "model=llama-3.2-1b-instruct"), ("model=Qwen2.5-1.5B-Instruct", "model=qwen2.5-1.5b-instruct"),
    ("trainer=NPO,GradDiff", "algorithm=npo,graddiff"),
])
def test_each_alias_maps_to_its_key_with_a_note(given, expected):
    argv, notes = rewrite([given, "seed=0"])
    assert argv == [expected, "seed=0"]
    assert len(notes) == 1 and given in notes[0] and expected in notes[0] and "open-unlearning" in notes[0]


def test_our_own_names_pass_unchanged_and_silently():
    argv = ["-m", "algorithm=npo", "model=tiny", "data.split=forget01", "variant=clean"]
    assert rewrite(argv) == (argv, [])


def test_derived_splits_are_accepted_when_they_agree():
    argv, notes = rewrite(["forget_split=forget05", "retain_split=retain95", "holdout_split=holdout05"])
    assert argv == ["data.split=forget05"] and len(notes) == 3
    with pytest.raises(AliasError, match=r"retain_split=retain90 does not match the forget split 'forget05'"):
        rewrite(["forget_split=forget05", "retain_split=retain90"])


def test_an_unknown_value_gets_the_nearest_name():
    assert did_you_mean("npoo", ["ga", "npo", "simnpo"]) == "; did you mean 'npo'?"
    assert did_you_mean("tiny_npoo", ["tiny_npo", "paper_npo"]) == "; did you mean 'tiny_npo'?"
    assert did_you_mean("zzz", ["ga", "npo"]) == ""


def test_an_unknown_algorithm_is_refused_with_a_suggestion():
    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import CONF_DIR, ConfigError

    with pytest.raises(ConfigError, match=r"algorithm='npoo' is not one of .*did you mean 'npo'\?"):
        check_overrides(["algorithm=npoo"], CONF_DIR)


ALGORITHMS = ["ga", "graddiff", "npo", "simnpo", "idkdpo", "undial", "wga", "satimp", "rmu"]


def _compose(*overrides, name="config"):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(CONF_DIR, version_base=None):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_an_algorithm_named_alone_gets_the_models_preset(group_configs, name):
    """`mpu-run algorithm=<name>` on the default model runs the model's tuned schedule for it (the one the slow
    tests show forgetting for every algorithm), unless the user sets client.lr / client.epochs."""
    alone = group_configs["algorithm", name]
    model = alone.model
    want = (model.algorithm_lr.get(name, model.client_lr), model.algorithm_epochs.get(name, model.client_epochs), 1)
    assert (alone.client.lr, alone.client.epochs, alone.rounds) == want


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_papers_schedule_is_one_table(name):
    """experiment=paper: R x E = 10 epochs at lr 1e-5 for every algorithm, read from the one table."""
    cfg = _compose("experiment=paper", f"algorithm={name}")
    assert cfg.rounds * cfg.client.epochs == 10 and cfg.client.lr == 1e-5
    assert (cfg.rounds, cfg.client.epochs) == (cfg.schedule[name].rounds, cfg.schedule[name].epochs)


def test_the_command_line_wins_over_every_preset():
    """One interpolation serves every algorithm: checked on an algorithm with its own lr (rmu) and one with its
    own epochs (undial) in the model's table, and on the paper's schedule."""
    for name in ("rmu", "undial"):
        mine = _compose(f"algorithm={name}", "client.lr=0.5", "client.epochs=2")
        assert (mine.client.lr, mine.client.epochs) == (0.5, 2)
    mine = _compose("experiment=paper", "algorithm=npo", "rounds=3", "client.epochs=2", "client.lr=0.5")
    assert (mine.rounds, mine.client.epochs, mine.client.lr) == (3, 2, 0.5)
