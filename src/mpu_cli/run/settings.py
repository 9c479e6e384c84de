"""How the resolved configuration becomes what the client is given (the server's: mpu/settings.ServerConfig
.from_config).

- `client_config(cfg, r)`: the client's ClientConfig for round r (its data order is seeded with client.seed + r);
- `chat_format(model_cfg)`: how questions and answers are rendered;
- `client_dtype(cfg)`: the dtype the client trains in (that of the published copies);
- `client_settings(cfg)`: CLIENT.json, all that a separate mpu-client process is told about itself.
"""
from __future__ import annotations

from dataclasses import asdict

from omegaconf import OmegaConf

from mpu_cli.data.formatting import ChatFormat
from mpu_cli.mpu.server import published_dtype
from mpu_cli.unlearn.settings import ClientConfig

CLIENT_KEYS = ("algorithm", "client", "data", "format", "dtype")


def client_config(cfg, round_: int) -> ClientConfig:
    client = ClientConfig(**OmegaConf.to_container(cfg.client, resolve=True))
    client.seed = int(cfg.client.seed) + round_
    return client


def chat_format(model_cfg) -> ChatFormat:
    return ChatFormat(model_cfg.system_prompt, model_cfg.date_string, model_cfg.max_length)


def client_dtype(cfg) -> str:
    """The dtype the client trains in: that of the copies it receives (model.dtype, or server.publish_dtype)."""
    from mpu_cli.models.io import resolve_dtype

    return str(published_dtype(resolve_dtype(cfg.model.dtype), cfg.server.publish_dtype)).removeprefix("torch.")


def client_settings(cfg) -> dict:
    """CLIENT.json: the algorithm, the client settings (round 0: the client adds r itself), its data, the chat
    format and the training dtype (client_dtype)."""
    return {
        "algorithm": {"name": cfg.algorithm.name, "params": OmegaConf.to_container(cfg.algorithm.params, resolve=True)},
        "client": asdict(client_config(cfg, 0)),
        "data": {"benchmark": cfg.data.benchmark, "source": cfg.data.source, "split": cfg.data.split,
                 "retain_split": cfg.data.retain_split},
        "format": dict(chat_format(cfg.model).__dict__),
        "dtype": client_dtype(cfg),
    }
