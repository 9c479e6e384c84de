"""Bad input stops `mpu-run` before any work: one line naming the value and the accepted ones, exit code 2,
no run (or sweep) directory, nothing in the cache."""


import pytest
from omegaconf import OmegaConf

from mpu_cli.cli.precheck import check_overrides
from mpu_cli.config import CONF_DIR, ConfigError

# More bad values, checked in process (the same code path, without a Python start per case).
MORE = [
    (["algorithm.name=nope"], ["algorithm='nope'", "npo"]),
    (["experiment=nope"], ["experiment='nope'", "paper"]),
    (["arm=nope"], ["arm='nope' is not one of ['clean', 'noised', 'mpu']"]),
    (["kappa=abc"], ["kappa=abc", "Float"]),
    (["m=1.5"], ["m=1.5", "Integer"]),
    (["data.split=forget99"], ["data.split='forget99'", "forget01"]),
    (["model.target=./no/such/model"], ["model.target='./no/such/model'", "does not exist", "finetune"]),
    (["model.base=/no/such/base.gguf"], ["model.base='/no/such/base.gguf'", "does not exist", "embedded"]),
    (["+foo=1"], ["unknown key 'foo'", "kappa"]),
    (["client.foo=1"], ["unknown key 'client.foo'", "epochs"]),
    (["+client.foo=1"], ["unknown key 'client.foo'", "epochs"]),
    (["algorithm.params.foo=1"], ["unknown key 'algorithm.params.foo'", "beta"]),
    (["+algorithm.params.foo=1"], ["algorithm.params.foo", "npo", "beta"]),
    (["algorithm=npo,ga"], ["algorithm=npo,ga", "--multirun"]),
    (["kappa=[1"], ["kappa=[1", "cannot parse"]),
    (["-m", "algorithm=npo,nope"], ["algorithm='nope'", "npo"]),
    (["device=gpu"], ["device='gpu'", "'auto', 'cpu', 'cuda', 'cuda:N'"]),
    (["client.device=cuda:x"], ["client.device='cuda:x'", "'auto', 'cpu'"]),
    (["server.noised_alpha=median"], ["server.noised_alpha='median'", "['one', 'mean', 'max']"]),
    (["arm=noised", "m=1", "server.noised_alpha=max"], ["m=1", "server.noised_alpha=max", "m must be >= 2"]),
    # numbers outside their declared range (they ran backwards, trained toward the impossible, or crashed)
    (["server.eta=-1"], ["server.eta=-1.0 must be > 0"]),
    (["client.max_grad_norm=-1"], ["client.max_grad_norm=-1.0 must be > 0"]),
    (["prepare.target_min_prob=2"], ["prepare.target_min_prob=2.0 must be in (0, 1]"]),
    (["model.max_length=0"], ["model.max_length=0 must be >= 2"]),
    (["client.lr=0"], ["client.lr=0.0 must be > 0"]),
    # choices are Enums: Hydra refuses them while composing, in the same one line as every other choice
    (["eval.metrics=quik"], ["eval.metrics='quik' is not one of ['all', 'quick']; did you mean 'quick'?"]),
    (["transport=file"], ["transport='file' is not one of ['inprocess', 'files']; did you mean 'files'?"]),
    (["client.reference=nope"], ["client.reference='nope' is not one of ['client_copy', 'server_clean']"]),
    (["model.dtype=bf16"], ["model.dtype='bf16' is not one of ['float32', 'bfloat16', 'float16']", "'bfloat16'"]),
    (["client.mixed_precision=bf"], ["client.mixed_precision='bf' is not one of ['no', 'bf16', 'fp16']"]),
    (["server.alpha_schedule=pow3"], ["server.alpha_schedule='pow3' is not one of ['linear', 'pow2', 'random']"]),
    (["server.noise_reference=zero"], ["server.noise_reference='zero' is not one of ['base', 'raw']"]),
    (["server.publish_dtype=half"], ["server.publish_dtype='half' is not one of ['model', 'float32']"]),
]
if not __import__("torch").cuda.is_available():  # here and in CI: asking for CUDA is bad input
    MORE.append((["device=cuda"], ["device='cuda'", "no CUDA device", "device=cpu"]))


@pytest.mark.parametrize("args,expected", MORE, ids=[" ".join(a) for a, _ in MORE])
def test_more_invalid_values_give_one_line(args, expected):
    multirun = args[0] == "-m"
    with pytest.raises(ConfigError) as err:
        check_overrides(args[1:] if multirun else args, CONF_DIR, multirun=multirun)
    message = str(err.value)
    assert "\n" not in message
    for s in expected:
        assert s in message, (s, message)


def test_valid_sweep_passes_the_precheck():
    assert check_overrides(["algorithm=npo,ga", "arm=clean,mpu", "kappa=0.01"], CONF_DIR, multirun=True) == 4


def _grid(config_name: str) -> dict:
    cfg = OmegaConf.load(f"{CONF_DIR}/{config_name}.yaml")
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize(
    "config_name,n_jobs", [("reproduce_tiny", 84), ("reproduce_m", 84), ("reproduce_tofu", 84), ("reproduce_lora", 18)]
)
def test_reproduction_grids_compose_and_validate(config_name, n_jobs, monkeypatch):
    if config_name == "reproduce_tofu":  # Hub names: checked against the local cache only when offline
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    grid = _grid(config_name)
    n = 1
    for values in grid.values():
        n *= len(values)
    assert n == n_jobs
    # Composing all 84 jobs takes a while: every value of every key once, as few jobs as the longest list (job i
    # takes value i of each key, cycling through the shorter lists), each composed and validated alone.
    assert check_overrides([f"{k}={v[0]}" for k, v in grid.items()], CONF_DIR, config_name, multirun=True) == 1
    for i in range(1, max(len(values) for values in grid.values())):
        assert check_overrides([f"{k}={v[i % len(v)]}" for k, v in grid.items()], CONF_DIR, config_name) == 1


def test_reproduce_tiny_covers_the_papers_grid():
    grid = _grid("reproduce_tiny")
    algorithms = set(grid["algorithm"])
    assert algorithms == {"ga", "graddiff", "npo", "simnpo", "undial", "satimp", "wga"}
    assert grid["variant"] == ["clean", "noised_k0.1", "mpu_k0.01", "mpu_k0.1"]
    assert grid["seed"] == ["0", "1", "2"]


def test_precheck_error_names_the_sweep_job():
    with pytest.raises(ConfigError, match=r"m=1 with arm=mpu.*in the sweep job"):
        check_overrides(["arm=clean,mpu", "m=1"], CONF_DIR, multirun=True)


def test_eval_options_are_checked_up_front():
    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import ConfigError

    with pytest.raises(ConfigError, match=r"eval.max_new_tokens=0 must be >= 1"):
        check_overrides(["eval.max_new_tokens=0"], CONF_DIR)


def _sweep_jobs(config_name: str) -> list[list[str]]:
    """The jobs of a sweep config as Hydra's basic sweeper expands its composed hydra.sweeper.params (inherited
    ones included), without running anything."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mpu_cli.config import register_configs

    register_configs()
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_break"):
        params = compose(config_name, return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return BasicSweeper.split_arguments(parsed, None)[0]


def test_break_map_grid_composes_with_the_stated_size_and_distinct_run_names():
    """The map: 3 algorithms x (clean + {noised, mpu m=2, mpu m=4} x 6 κ) x 3 seeds = 171 runs; its α axis:
    NPO x κ in {0.1, 1} x {mpu m=4 pow2 / random, noised α=mean / max} x 3 seeds = 24. Every variant composes
    and validates, and no two runs of the two sweeps share a run folder name."""
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import arm_tag
    from mpu_cli.run import seed_tag
    from mpu_cli.run.checks import validate

    main, alpha = _sweep_jobs("reproduce_break"), _sweep_jobs("reproduce_break_alpha")
    assert (len(main), len(alpha)) == (171, 24)
    arms = {}
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_break"):
        for name, jobs in (("reproduce_break", main), ("reproduce_break_alpha", alpha)):
            for variant in sorted({o for job in jobs for o in job if o.startswith("variant=")}):
                cfg = compose(name, overrides=["algorithm=npo", "seed=0", variant])
                validate(cfg)
                assert cfg.eval.metrics == "quick"
                assert cfg.client.seed == seed_tag.client_seed(0, cfg.prepare.cache_dir)  # follows the seed, keyed
                s = cfg.server
                arms[variant] = (cfg.arm, cfg.kappa, cfg.m, s.alpha_schedule, s.noised_alpha,
                                 arm_tag(cfg.arm, cfg.kappa, cfg.m, s.alpha_schedule, s.noised_alpha))
    kappas = (0.01, 0.03, 0.1, 0.3, 1.0, 2.0)
    main_arms = {arms[o][:5] for job in main for o in job if o.startswith("variant=")}
    assert main_arms == ({("clean", 0.01, 2, "linear", "one")} | {("noised", k, 2, "linear", "one") for k in kappas}
                         | {("mpu", k, m, "linear", "one") for k in kappas for m in (2, 4)})
    alpha_arms = {arms[o][:5] for job in alpha for o in job if o.startswith("variant=")}
    assert alpha_arms == ({("mpu", k, 4, s, "one") for k in (0.1, 1.0) for s in ("pow2", "random")}
                          | {("noised", k, 2, "linear", a) for k in (0.1, 1.0) for a in ("mean", "max")})
    assert {tuple(o.split("=")[0] for o in job) for job in main + alpha} == {("algorithm", "variant", "seed")}
    names = [(dict(o.split("=") for o in job)["algorithm"], arms[next(o for o in job if o.startswith("variant="))][5],
              dict(o.split("=") for o in job)["seed"]) for job in main + alpha]
    assert len(set(names)) == len(names) == 195
    assert {a for a, _, _ in names} == {"graddiff", "npo", "simnpo"}
    assert {a for a, _, _ in names[len(main):]} == {"npo"}


LORA_SMOLLM2_LR_SCALE = 30.0  # the pilot's choice (docs/lora.md): forget Prob closest to the full client's


def test_lora_smollm2_grid_pairs_full_and_lora_clients_at_the_cut_schedule():
    """`make reproduce-lora-smollm2`: NPO x {clean, MPU κ 0.01 / 0.1} x {full, LoRA} x 3 seeds = 18 runs, each
    composing reproduce_smollm2's setting with both clients at 2 fp32 epochs, no retain model and the adapter at
    the lr_scale the pilot chose."""
    from hydra import compose, initialize_config_dir

    jobs = _sweep_jobs("reproduce_lora_smollm2")
    assert len(jobs) == len({tuple(job) for job in jobs}) == 18
    assert {o for job in jobs for o in job} == {
        "algorithm=npo", "variant=clean", "variant=mpu_k0.01", "variant=mpu_k0.1",
        "client.lora.enabled=False", "client.lora.enabled=True", "seed=0", "seed=1", "seed=2"}
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_lora_smollm2"):
        cfg = compose("reproduce_lora_smollm2", overrides=["variant=mpu_k0.1", "client.lora.enabled=true", "seed=1"])
        base = compose("reproduce_smollm2", overrides=["variant=mpu_k0.1", "seed=1"])
    assert (cfg.arm, cfg.kappa, cfg.m, cfg.client.lora.enabled, cfg.client.lora.rank) == ("mpu", 0.1, 2, True, 8)
    assert (cfg.client.epochs, cfg.client.mixed_precision, cfg.model.retain, cfg.client.lora.lr_scale) == (
        2, None, None, LORA_SMOLLM2_LR_SCALE)
    assert (base.client.epochs, base.client.mixed_precision) == (5, "bf16")  # what the cut changes
    for key in ("model.name", "model.target", "data", "prepare", "eval", "client.lr", "client.batch_size"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(base, key), key


def _ranged_fields():
    from mpu_cli.config import SCHEMAS
    from mpu_cli.options import accepted_range, leaf_fields

    return [(schema, name, accepted_range(f), int in (hint, *getattr(hint, "__args__", ())))
            for schema, cls in SCHEMAS.items() for name, f, hint in leaf_fields(cls) if accepted_range(f)]


@pytest.mark.parametrize("schema,key,bounds,integer", _ranged_fields(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_declared_range_refuses_the_number_just_outside_and_accepts_its_bound(schema, key, bounds, integer):
    from mpu_cli.config import SCHEMAS, check_schema

    step = 1 if integer else 0.5
    low, high = bounds.low, bounds.high
    outside = [v for v in ((low if bounds.low_open else low - step) if low is not None else None,
                           (high if bounds.high_open else high + step) if high is not None else None) if v is not None]
    inside = next(v for v in (low, high, (low or 0) + step) if v is not None and bounds.accepts(v))
    cfg = OmegaConf.structured(SCHEMAS[schema])
    if schema == "mpu_eval_schema":
        cfg.model_path = "x"
    OmegaConf.update(cfg, key, inside)
    check_schema(cfg, SCHEMAS[schema])
    for value in outside:
        OmegaConf.update(cfg, key, value)
        with pytest.raises(ConfigError) as err:
            check_schema(cfg, SCHEMAS[schema])
        assert str(err.value).startswith(f"{key}=") and f"must be {bounds}" in str(err.value), str(err.value)


def test_the_root_configs_hold_no_default_of_their_own():
    """Every default lives once, in the schema: the root configs only choose groups and set Hydra's options."""
    for name in ("config", "eval"):
        assert set(OmegaConf.load(f"{CONF_DIR}/{name}.yaml")) == {"defaults", "hydra"}, name


def test_mpu_eval_refuses_a_bad_choice_in_one_line():
    from mpu_cli.cli.eval import validate as eval_validate

    with pytest.raises(ConfigError, match=r"^eval.metrics='quik' is not one of \['all', 'quick'\]; did you mean"):
        check_overrides(["model_path=target", "eval.metrics=quik"], CONF_DIR, "eval", check=eval_validate)
    with pytest.raises(ConfigError, match=r"^eval.batch_size=0 must be >= 1$"):
        check_overrides(["model_path=target", "eval.batch_size=0"], CONF_DIR, "eval", check=eval_validate)
