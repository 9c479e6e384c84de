"""Large-model options of the client: gradient checkpointing and the loop under accelerate give the same update
as the plain loop on the tiny model; the shipped accelerate configs are in accelerate's own format."""
import pytest
import torch
import yaml

from mpu_cli.config import ConfigError
from mpu_cli.data.formatting import ChatFormat, encode_qa, pad_id
from mpu_cli.data.tofu import load_split
from mpu_cli.models.io import state_dict_fp32
from mpu_cli.models.tiny import init_tiny_llama, load_embedded_tokenizer
from mpu_cli.run.checks import validate
from mpu_cli.unlearn import accel
from mpu_cli.unlearn.algorithms import build_algorithm
from mpu_cli.unlearn.client import ClientConfig, ClientData, unlearn_copy


@pytest.fixture(scope="module")
def setup():
    tok = load_embedded_tokenizer()
    fmt = ChatFormat(max_length=64)
    enc = lambda rows: [encode_qa(tok, r["question"], r["answer"], fmt) for r in rows]
    data = ClientData(enc(load_split("embedded", "forget01")), enc(load_split("embedded", "retain99")[:8]))
    model = init_tiny_llama(tok, seed=1)
    return tok, data, model, state_dict_fp32(model)


def _update(setup, algorithm="npo", **options):
    tok, data, model, theta = setup
    cfg = ClientConfig(lr=1e-3, epochs=2, batch_size=2, grad_accum=2, seed=3, **options)
    return unlearn_copy(model, theta, build_algorithm(algorithm, {}), data, cfg, pad_id(tok))


def _max_diff(a, b):
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("algorithm", ["npo", "graddiff"])
def test_gradient_checkpointing_gives_the_same_update(setup, algorithm):
    plain = _update(setup, algorithm)
    ckpt = _update(setup, algorithm, gradient_checkpointing=True)
    assert _max_diff(plain, setup[3]) > 1e-4  # the update is not trivially zero
    assert _max_diff(plain, ckpt) <= 1e-5
    model = setup[2]
    on = getattr(type(model), "is_activation_checkpointing", None) and model.is_activation_checkpointing
    assert not (on or any(getattr(m, "gradient_checkpointing", False) for m in model.modules()))  # off again


def test_accelerate_single_process_cpu_equals_plain_loop(setup):
    plain = _update(setup)
    accelerated = _update(setup, accelerate_config="ddp", mixed_precision="no")  # one process: no DDP wrap
    assert accel.get_accelerator("ddp", "no").num_processes == 1
    assert _max_diff(plain, accelerated) <= 1e-5
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in accelerated.values())
    # the model object is left as it was (no autocast patch, reusable by the plain loop)
    assert _max_diff(plain, _update(setup)) == 0.0


def test_accelerate_with_checkpointing_and_bf16_autocast_runs(setup):
    accelerated = _update(setup, mixed_precision="bf16", gradient_checkpointing=True)
    plain = _update(setup)
    assert all(v.dtype == torch.float32 for v in accelerated.values())  # fp32 for the server
    assert 0 < _max_diff(plain, accelerated) < 0.05  # bf16 autocast: close to, not equal to, fp32


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero3"])
def test_shipped_accelerate_configs_are_accelerate_configs(name):
    from accelerate.commands.launch import launch_command_parser

    d = accel.load_config(name)  # accelerate's own reader: unknown top-level keys raise
    assert d["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}[name]
    assert d["mixed_precision"] == "bf16"
    raw = yaml.safe_load(accel.resolve_config(name).read_text())
    launch_args = {a.dest for a in launch_command_parser()._actions}
    for key in list(raw.get("fsdp_config", {})) + list(raw.get("deepspeed_config", {})):
        assert key in launch_args, f"{name}: {key} is not an option accelerate launch knows"
    assert accel.launch_command(name)[:3] == ["accelerate", "launch", "--config_file"]


def test_bad_accelerate_settings_are_config_errors():
    from omegaconf import OmegaConf

    from mpu_cli.config import MPUConfig

    cfg = OmegaConf.structured(MPUConfig)
    cfg.client.accelerate_config = "nosuch"
    with pytest.raises(ConfigError, match="accelerate_config='nosuch' is not one of .*ddp"):
        validate(cfg)
    cfg.client.accelerate_config = "fsdp"
    from omegaconf.errors import ValidationError

    with pytest.raises(ValidationError, match="fp8x"):  # an Enum: the schema's type refuses it (test_validation:
        cfg.client.mixed_precision = "fp8x"  # the command line's one line)
