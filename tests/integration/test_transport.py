"""The file transport: two real parties exchanging only files.

One module-scoped scenario drives `mpu-server` / `mpu-client` by hand, sequentially (init, publish, an isolated
client, a tampered update, a redo, aggregate); one `mpu-run transport=files runner.parallel_copies=2` run; and
the in-process runner called directly. All three use the same seed and must give the same θ bitwise (every
process single-threaded: thread count changes CPU reduction order). FAST settings keep the file to ~3 minutes.
"""
import ast
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mpu_cli.transport import exchange as ex
from mpu_cli.transport.errors import TransportError

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "mpu_cli"

pytestmark = pytest.mark.integration  # real processes / the prepared models
SEED = 0
FAST = ["client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "data.split=forget01",
        f"seed={SEED}", "save_model=true", "algorithm=npo", "kappa=0.01", "m=2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
SECRET_WORDS = ("seed", "alpha", "sigma", "theta", "weight", "secret", "transform", "perm", "angle", "kappa")

# Runs a party's main() with an audit hook that records every file opened from Python and, at exit, the
# mpu_cli modules loaded: argv = [record file, module, args...].
WRAP = r"""
import json, sys, atexit
rec = open(sys.argv[1], "w")
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        rec.write("OPEN " + (args[0].decode() if isinstance(args[0], bytes) else args[0]) + "\n")
sys.addaudithook(hook)
def done():
    rec.write("MODULES " + json.dumps(sorted(m for m in sys.modules if m.startswith("mpu_cli"))) + "\n")
    rec.flush()
atexit.register(done)
module, *argv = sys.argv[2:]
sys.argv = [module] + argv
import importlib
importlib.import_module(module).main()
"""


def _party(module: str, args: list[str], record: Path, env=None, cwd=None, expect: int = 0):
    proc = subprocess.run([sys.executable, "-c", WRAP, str(record), module, *map(str, args)],
                          check=False, capture_output=True, text=True, env=env or ENV, cwd=cwd, timeout=600)
    assert proc.returncode == expect, (proc.returncode, proc.stderr[-3000:])
    return proc


def _record(record: Path) -> tuple[list[str], list[str]]:
    lines = record.read_text().splitlines()
    opened = [ln[5:] for ln in lines if ln.startswith("OPEN ")]
    modules = json.loads([ln for ln in lines if ln.startswith("MODULES ")][-1][8:])
    return opened, modules


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _server(args, record, expect=0):
    return _party("mpu_cli.cli.server", args, record, expect=expect)


# ---- the hand-driven scenario -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg():
    """mpu-run's composed config for FAST (what `mpu-run <FAST>` runs)."""
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_transport"):
        return compose(config_name="config", overrides=FAST)


@pytest.fixture(scope="module")
def prepared(cfg):
    """The cached embedded models (built on first use) for data.split=forget01."""
    from mpu_cli.models.prepare import prepare_models

    return prepare_models(cfg.model, cfg.data, cfg.prepare)


@pytest.fixture(scope="module")
def inprocess_theta(cfg, prepared, tmp_path_factory):
    """The in-process runner's rounds (server and client as function calls), single-threaded."""
    from mpu_cli.models.io import load_tokenizer, resolve_dtype
    from mpu_cli.run.pipeline import unlearn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theta, _ = unlearn(cfg, tmp_path_factory.mktemp("inprocess"), prepared, load_tokenizer(prepared.tokenizer),
                           resolve_dtype(cfg.model.dtype))
    finally:
        torch.set_num_threads(threads)
    return theta


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, cfg, prepared):
    """init + publish by the server; the client, isolated, unlearns both copies (one process, sequentially)."""
    from mpu_cli.run.processes import server_init_args, write_server_settings
    from mpu_cli.run.settings import client_settings

    root = tmp_path_factory.mktemp("scenario")
    state, exchange, recs = root / "run" / "server_private", root / "run" / "exchange", root / "records"
    recs.mkdir()
    settings = write_server_settings(cfg, state)
    init = server_init_args(prepared, cfg.model.dtype, state, exchange, settings)
    assert init[:5] == ["init", "--state", str(state), "--exchange", str(exchange)]
    # the seed travels in the private SERVER.json, never on the command line
    assert "--seed" not in init and cfg.seed is not None and json.loads(settings.read_text())["seed"] == cfg.seed
    assert stat.S_IMODE(os.stat(settings).st_mode) == 0o600
    _server(init, recs / "init")
    _server(["publish", "--state", state], recs / "publish")

    # The client gets a copy of the exchange folder and its own config, in a folder of its own, with an
    # environment that names nothing of the server (no cache dir, a fresh HOME).
    iso = root / "client_side"
    shutil.copytree(exchange, iso / "exchange")
    client_json = client_settings(cfg)
    assert set(client_json) == {"algorithm", "client", "data", "format", "dtype"}
    (iso / "client.json").write_text(json.dumps(client_json))
    (iso / "home").mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(iso / "home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    client_args = ["unlearn", "--exchange", iso / "exchange", "--config", iso / "client.json"]
    _party("mpu_cli.cli.client", client_args, recs / "client", env=env, cwd=iso)
    for k in range(2):  # the client's answer travels back
        for name in (ex.RETURNED, ex.RETURNED_MANIFEST):
            shutil.copy2(ex.copy_dir(iso / "exchange", 1, k) / name, ex.copy_dir(exchange, 1, k) / name)
    return {"root": root, "state": state, "exchange": exchange, "iso": iso, "recs": recs, "env": env,
            "client_args": client_args, "prepared": prepared}


def test_client_process_sees_only_the_exchange_folder_and_its_own_inputs(scenario):
    opened, modules = _record(scenario["recs"] / "client")
    iso = str(scenario["iso"])
    forbidden = [str(scenario["root"] / "run"), os.environ["MPU_CACHE_DIR"]]
    assert not [p for p in opened for f in forbidden if os.path.abspath(p).startswith(f)]
    assert any(p.startswith(iso) and p.endswith("config.json") for p in opened)  # the hook does see its reads
    assert not [m for m in modules if m.startswith(("mpu_cli.mpu", "mpu_cli.run.pipeline", "mpu_cli.models.prepare"))]
    assert "mpu_cli.unlearn.client" in modules


def test_server_processes_never_load_the_client_or_the_data(scenario):
    for rec in ("init", "publish"):
        opened, modules = _record(scenario["recs"] / rec)
        assert not [m for m in modules if m.startswith(("mpu_cli.data", "mpu_cli.unlearn", "mpu_cli.run.pipeline"))]
        assert "mpu_cli.mpu.server" in modules
        assert not [p for p in opened if "/data/embedded" in p]  # the package's (forget) data files


def _imports(path: Path) -> list[str]:
    mods = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mods.append(node.module or "")
        elif isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
    return mods


def test_server_cli_source_imports_neither_client_nor_data():
    server_side = {"cli/server.py": True, "transport/server.py": True, "transport/exchange.py": False,
                   "transport/errors.py": False, "run/processes.py": True}  # path -> may it import the server (mpu)?
    for name, may_import_server in server_side.items():
        for mod in _imports(SRC / name):
            parts = mod.split(".")
            assert "unlearn" not in parts and "data" not in parts and "pipeline" not in parts, (name, mod)
            if not may_import_server:
                assert "mpu" not in parts, (name, mod)  # the shared pieces import no server either
    for mod in _imports(SRC / "cli" / "client.py"):
        assert not mod.startswith(("mpu_cli.mpu", "mpu_cli.run")), mod


def test_exchange_folder_holds_no_secret_and_no_theta(scenario):
    from mpu_cli.transport import server as server_party

    state, exchange = scenario["state"], scenario["exchange"]
    st = json.loads((state / "state.json").read_text())
    secrets = server_party.restore(state, st, with_base=False).private_state()
    assert secrets["alphas"] == [1.0, 2.0] and secrets["sigmas"]  # the secrets exist, server side
    files = sorted(str(p.relative_to(exchange)) for p in exchange.rglob("*") if p.is_file())
    public = [f for f in files if f.startswith("public/")]
    assert sorted(Path(f).name for f in public if not Path(f).name.startswith(("tokenizer", "chat_template",
                                                                                 "special_tokens"))) == ["config.json"]
    assert [f for f in files if f not in public] == sorted(
        ["round_1/round.json"] + [f"round_1/copy_{k}/{n}" for k in range(2) for n in
                                  (ex.PUBLISHED, ex.PUBLISHED_MANIFEST, ex.RETURNED, ex.RETURNED_MANIFEST)])
    numbers = {str(secrets["round_seed"])} | {repr(float(a)) for a in secrets["alphas"][1:]} | {
        repr(float(s)) for s in secrets["sigmas"].values()} | {repr(float(w)) for w in secrets["weights"]}
    for f in exchange.rglob("*.json"):
        text = f.read_text()
        for secret in numbers:
            assert secret not in text, (f, secret)
        if f.parent.name != "public":
            obj = json.loads(text)
            ex.check_manifest_is_public(obj)
            keys = set(obj) | {k for v in obj.values() if isinstance(v, dict) for k in v
                               if not isinstance(v.get(k), dict)}
            for key in keys:
                assert not any(w in key.lower() for w in SECRET_WORDS) or key == "published_sha256", (f, key)
    # θ_0 (the target) vs the published copies: no transformer-block tensor goes out exact; the embeddings,
    # final norm and LM head do (reported as exposed_fraction).
    theta0 = load_file(str(Path(scenario["prepared"].target) / "model.safetensors"))
    for k in range(2):
        pub = load_file(str(ex.copy_dir(exchange, 1, k) / ex.PUBLISHED))
        for name, t in theta0.items():
            if ".layers." in name:
                assert not torch.equal(pub[name], t), (k, name)
            else:
                assert torch.equal(pub[name], t), (k, name)
    theta_files = {_sha(p) for p in state.glob("theta_*.safetensors")}
    assert not theta_files & {_sha(p) for p in exchange.rglob("*.safetensors")}


def test_server_private_files_are_owner_only(scenario):
    """Written by a real `mpu-server init` / `publish`: log.jsonl and model_config/ included."""
    import stat

    state = scenario["state"]
    for p in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert (state / "log.jsonl").exists() and (state / "model_config" / "config.json").exists()


def test_tampered_or_truncated_update_is_rejected_and_the_copy_can_be_redone(scenario, prepared):
    state, exchange, recs = scenario["state"], scenario["exchange"], scenario["recs"]
    theta_file = state / json.loads((state / "state.json").read_text())["theta_file"]
    before = (_sha(theta_file), (state / "state.json").read_text())
    returned0 = ex.copy_dir(exchange, 1, 0) / ex.RETURNED
    good = returned0.read_bytes()
    bad = bytearray(good)
    bad[-100] ^= 0x01  # one bit in the last tensor
    returned0.write_bytes(bytes(bad))
    proc = _server(["aggregate", "--state", state], recs / "agg_bad", expect=2)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "round 1 copy 0" in err and "SHA-256" in err, err
    assert "nothing was aggregated" in err and "--copy 0" in err
    assert (_sha(theta_file), (state / "state.json").read_text()) == before

    # Truncated, with a manifest rewritten to match: the header no longer fits the file.
    returned1 = ex.copy_dir(exchange, 1, 1) / ex.RETURNED
    good1 = returned1.read_bytes()
    returned1.write_bytes(good1[: len(good1) // 2])
    from mpu_cli.cli import server as server_cli
    from mpu_cli.transport import server as server_party

    m1_path = ex.copy_dir(exchange, 1, 1) / ex.RETURNED_MANIFEST
    m1 = json.loads(m1_path.read_text())
    m1["files"][ex.RETURNED] = {"sha256": _sha(returned1), "bytes": len(good1) // 2}
    m1_path.write_text(json.dumps(m1))
    st = json.loads((state / "state.json").read_text())
    with pytest.raises(TransportError, match=r"round 1 copy 1: returned.safetensors is truncated"):
        server_party.validate_returned(state, st, exchange)
    returned1.write_bytes(good1)
    m1["files"][ex.RETURNED] = {"sha256": _sha(returned1), "bytes": len(good1)}
    m1_path.write_text(json.dumps(m1))

    # Redo copy 0 on the client side; the server then aggregates, and equals the in-process round.
    iso = scenario["iso"]
    _party("mpu_cli.cli.client", scenario["client_args"] + ["--copy", "0"], recs / "redo",
           env=scenario["env"], cwd=iso)
    for name in (ex.RETURNED, ex.RETURNED_MANIFEST):
        shutil.copy2(ex.copy_dir(iso / "exchange", 1, 0) / name, ex.copy_dir(exchange, 1, 0) / name)
    assert returned0.read_bytes() == good  # deterministic client: the redo reproduces the update
    agg = _server(["aggregate", "--state", state], recs / "agg_ok")
    assert "is not as it was written" not in agg.stderr  # the published copies were read back, not rebuilt
    st = json.loads((state / "state.json").read_text())
    assert st["round"] == 1 and not st["pending"] and st["theta_file"] == "theta_r1.safetensors"
    assert not (state / "theta_r0.safetensors").exists()
    with pytest.raises(SystemExit) as exit_info:  # nothing pending any more
        server_cli.main(["aggregate", "--state", str(state)])
    assert exit_info.value.code == 2


# ---- validation of received files, in process ----------------------------------------------------------------


def _one_file(tmp_path, tensors):
    path = tmp_path / "x.safetensors"
    info = ex.write_safetensors(path, tensors)
    manifest = {"files": {path.name: info},
                "tensors": ex.tensor_table({n: (tuple(t.shape), t.dtype) for n, t in tensors.items()})}
    expected = {n: (tuple(t.shape), ("F32",)) for n, t in tensors.items()}
    return path, manifest, expected


def test_streaming_writer_roundtrips_and_reader_checks_everything(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5), "c": torch.tensor(2.0)}
    path, manifest, expected = _one_file(tmp_path, tensors)
    back = ex.read_validated(path, manifest, expected, "round 1 copy 0")
    assert all(torch.equal(back[n], tensors[n]) for n in tensors)
    assert all(torch.equal(load_file(str(path))[n], tensors[n]) for n in tensors)  # plain safetensors too
    bf = {"w": torch.randn(4, 2).bfloat16()}
    p2 = tmp_path / "bf.safetensors"
    ex.write_safetensors(p2, bf)
    assert torch.equal(load_file(str(p2))["w"], bf["w"])

    def rejects(pattern, manifest=manifest, expected=expected):
        with pytest.raises(TransportError, match=pattern):
            ex.read_validated(path, manifest, expected, "round 1 copy 0")

    rejects("round 1 copy 0: .*wrong tensor names", expected=expected | {"d": ((1,), ("F32",))})
    rejects("'a' has shape", expected=expected | {"a": ((4, 3), ("F32",))})
    rejects("'a' has dtype F32, accepted: BF16", expected=expected | {"a": ((3, 4), ("BF16",))})
    rejects("undocumented keys", manifest=manifest | {"seed": 1})
    rejects("does not describe", manifest={"files": {}, "tensors": manifest["tensors"]})
    ex.write_safetensors(path, tensors | {"b": torch.tensor([1.0, float("nan"), 0, 0, 0])})
    rejects("SHA-256 .* does not match")
    _, manifest_nan, _ = _one_file(tmp_path, tensors | {"b": torch.tensor([1.0, float("nan"), 0, 0, 0])})
    rejects("'b' has 1 non-finite values", manifest=manifest_nan)


def test_lazy_state_dict_reads_each_tensor_without_a_memory_map(tmp_path):
    tensors = {"w": torch.randn(4, 3), "h": torch.randn(5).bfloat16(), "s": torch.tensor(2.5), "e": torch.ones(0, 2)}
    path = tmp_path / "x.safetensors"
    ex.write_safetensors(path, tensors)
    lazy = ex.LazyStateDict(path)
    assert sorted(lazy) == sorted(tensors) and len(lazy) == 4 and "w" in lazy and "nope" not in lazy
    for n, t in tensors.items():
        assert lazy[n].dtype == t.dtype and torch.equal(lazy[n], t) and lazy.shape(n) == tuple(t.shape)
    with pytest.raises(KeyError):
        lazy["nope"]


def test_foreign_update_is_rejected(scenario):
    m = json.loads((ex.copy_dir(scenario["exchange"], 1, 0) / ex.RETURNED_MANIFEST).read_text())
    with pytest.raises(TransportError, match="another run"):
        ex.check_manifest_identity(m, "returned", "someone-else", 1, 0, "round 1 copy 0")
    with pytest.raises(TransportError, match="another round or copy"):
        ex.check_manifest_identity(m, "returned", m["run_id"], 1, 1, "round 1 copy 1")


# ---- the same run three ways ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory, mpu_run_cmd, prepared):
    out = tmp_path_factory.mktemp("runs") / "parallel"
    proc = subprocess.run([*mpu_run_cmd, *FAST, "transport=files", "runner.parallel_copies=2",
                           f"hydra.run.dir={out}"], check=False, capture_output=True, text=True, timeout=900,
                          env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _scenario_theta(scenario) -> dict:
    state = scenario["state"]
    if json.loads((state / "state.json").read_text())["pending"]:  # the tamper test did not run first
        _server(["aggregate", "--state", state], scenario["recs"] / "agg_late")
    return load_file(str(state / json.loads((state / "state.json").read_text())["theta_file"]))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[n].float() - b[n].float()).abs().max().item() for n in a)


def test_files_transport_equals_in_process(scenario, inprocess_theta):
    """mpu-server / mpu-client processes, one copy after the other, vs the in-process runner: bitwise."""
    assert _max_diff(_scenario_theta(scenario), inprocess_theta) == 0.0


def test_the_logs_name_neither_the_target_nor_the_seed(parallel_run, prepared):
    text = "".join(p.read_text() for p in (parallel_run / "logs").glob("*.log"))
    assert "--target (withheld)" in text and str(prepared.target) not in text
    assert f"--seed {SEED}" not in text


def test_parallel_copies_equal_sequential(parallel_run, scenario, inprocess_theta):
    """`mpu-run transport=files runner.parallel_copies=2`: each copy in its own pinned client process."""
    out = parallel_run
    final = load_file(str(out / "server_private" / "theta_r1.safetensors"))
    assert _max_diff(final, _scenario_theta(scenario)) == 0.0  # = the sequential file transport
    assert _max_diff(final, inprocess_theta) == 0.0  # = the in-process runner
    model = load_file(str(out / "model" / "model.safetensors"))  # what the run evaluated and saved
    assert _max_diff(model, final) == 0.0
    logs = sorted((out / "logs").glob("client_r1_slot*.log"))
    assert [p.name for p in logs] == ["client_r1_slot0.log", "client_r1_slot1.log"]
    for s, p in enumerate(logs):
        first = p.read_text().splitlines()[0]
        assert f"--copy {s}" in first and "--threads 1" in first  # one copy per slot, pinned threads
    assert not list((out / "exchange").rglob("theta*")) and json.loads(
        (out / "server_public.json").read_text())["m"] == 2
    assert (out / "TOFU_SUMMARY.json").exists() and (out / "results.csv").exists()


@pytest.fixture(scope="module")
def forked_run(tmp_path_factory, mpu_run_cmd, prepared):
    out = tmp_path_factory.mktemp("runs") / "forked"
    proc = subprocess.run([*mpu_run_cmd, *FAST, "runner.parallel_copies=2", "m=3", f"hydra.run.dir={out}"],
                          check=False, capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr  # Hydra logs to stdout


def test_forked_parallel_copies_equal_sequential(forked_run, mpu_run_cmd, tmp_path):
    """`mpu-run runner.parallel_copies=2` on the CPU (transport=inprocess): the copies of a round in two forked
    worker processes, three copies over two slots; the final θ equals the sequential run's bitwise."""
    out, log = forked_run
    assert "unlearned in 2 parallel slots" in log
    assert not (out / "exchange").exists()  # no file transport: the workers are forks of the runner
    seq = tmp_path / "sequential"
    proc = subprocess.run([*mpu_run_cmd, *FAST, "m=3", f"hydra.run.dir={seq}"], check=False, capture_output=True,
                          text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    par = load_file(str(out / "model" / "model.safetensors"))
    assert _max_diff(par, load_file(str(seq / "model" / "model.safetensors"))) == 0.0
    assert json.loads((out / "server_public.json").read_text())["m"] == 3


def test_a_dead_parallel_slot_is_an_error_not_a_hang():
    from mpu_cli.run.slots import run_in_slots

    def task(k):
        if k == 1:
            os.kill(os.getpid(), 9)  # the OOM killer, say
        return {"k": k}

    assert run_in_slots(lambda k: {"k": k}, [0, 1, 2], 2) == [{"k": 0}, {"k": 1}, {"k": 2}]
    with pytest.raises(RuntimeError, match="parallel client slot died"):
        run_in_slots(task, [0, 1, 2], 2)


def test_transport_settings_are_validated():
    from mpu_cli.config import CONF_DIR
    from mpu_cli.config import ConfigError
    from mpu_cli.cli.precheck import check_overrides

    with pytest.raises(ConfigError, match="transport='tcp' is not one of"):
        check_overrides(["transport=tcp"], CONF_DIR)
    with pytest.raises(ConfigError, match="parallel_copies=0 must be >= 1"):
        check_overrides(["runner.parallel_copies=0"], CONF_DIR)
    with pytest.raises(ConfigError, match="server_clean"):
        check_overrides(["transport=files", "client.reference=server_clean"], CONF_DIR)
    assert check_overrides(["transport=files", "runner.parallel_copies=2"], CONF_DIR) == 1


def test_server_state_export_and_restore_resume_a_pending_round_exactly():
    """What mpu-server relies on between its processes: export_state + restore rebuild the server, pending round
    included (same copies, same aggregate), with the base or with the σ recorded at publish."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    theta = {n: t.clone() for n, t in LlamaForCausalLM(config).state_dict().items()}
    base = {n: t + 0.1 * torch.randn_like(t) for n, t in theta.items()}
    layout = ModelLayout.from_hf_config(config)
    for seed in (None, 3):  # CSPRNG secrets too: the round seed travels in the private state
        server = MPUServer(theta, layout, ServerConfig(arm="mpu", kappa=0.1, m=3, seed=seed), base=base)
        copies = server.publish()
        th, meta = server.export_state()
        returned = [{n: t + 0.01 * (k + 1) for n, t in c.items()} for k, c in enumerate(copies)]
        for with_base in (True, False):
            other = MPUServer.restore(th, meta, layout, base=base if with_base else None)
            assert other.pending and other.round == 1 and other.noise_reference == "base"
            assert other.private_state()["sigmas"] == server.private_state()["sigmas"]
            for name, tensors in ((n, other._published_tensors(n)) for n in theta):
                assert all(torch.equal(t, copies[k][name]) for k, t in enumerate(tensors))
            new = other.aggregate(returned)
            assert server.pending
            ref = MPUServer.restore(th, meta, layout, base=base).aggregate(returned)
            assert all(torch.equal(new[n], ref[n]) for n in theta)
        expected = server.aggregate(returned)
        assert all(torch.equal(new[n], expected[n]) for n in theta)


@pytest.mark.parametrize("plant", ["public folder", "public file"])
def test_init_follows_no_link_planted_in_the_exchange_folder(tmp_path, cfg, prepared, plant):
    """A link planted as exchange/public (or as a file in it) would have init write the public model where it
    points: the folder link is refused in one line (exit 2), the file link is replaced, never written through."""
    from mpu_cli.run.processes import server_init_args, write_server_settings

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("mine\n")
    state, exchange = tmp_path / "run" / "server_private", tmp_path / "run" / "exchange"
    exchange.mkdir(parents=True)
    if plant == "public folder":
        (exchange / "public").symlink_to(elsewhere, target_is_directory=True)
    else:
        (exchange / "public").mkdir()
        (exchange / "public" / "config.json").symlink_to(elsewhere / "config.json")
    settings = write_server_settings(cfg, state)
    refused = plant == "public folder"
    proc = _server(server_init_args(prepared, cfg.model.dtype, state, exchange, settings), tmp_path / "record",
                   expect=2 if refused else 0)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["config.json"]
    assert (elsewhere / "config.json").read_text() == "mine\n"
    if refused:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Loading weights" not in ln]
        assert len(lines) == 1 and "public is a symbolic link" in lines[0], proc.stderr[-2000:]
        assert not (state / "state.json").exists()
    else:
        public_config = exchange / "public" / "config.json"
        assert not public_config.is_symlink() and json.loads(public_config.read_text())["model_type"] == "llama"
    assert not [p for p in exchange.iterdir() if p.name.startswith(".public")]  # no temporary folder left


def test_a_returned_copy_the_server_would_refuse_is_redone_on_resume(mpu_run_cmd, prepared, tmp_path):
    """A run stopped before aggregating, one returned copy altered meanwhile: the resumed run does not hand it to
    the server (which would refuse it, and again on every resume) but has the client redo it, and finishes."""
    out = tmp_path / "run"
    args = [*mpu_run_cmd, *FAST, "transport=files", "model.retain=null", f"hydra.run.dir={out}"]
    env = {k: v for k, v in ENV.items() if k not in ("MPU_KILL_AT", "MPU_KILL_SIGNAL", "MPU_FAULT_INJECT")}
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=900,
                          env=env | {"MPU_KILL_AT": "round1_before_aggregate"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    returned = ex.copy_dir(out / "exchange", 1, 0) / ex.RETURNED
    data = bytearray(returned.read_bytes())
    data[-4] ^= 0xFF
    returned.write_bytes(bytes(data))
    assert ex.returned_refusal(out / "exchange", 1, 0) is not None
    assert ex.returned_refusal(out / "exchange", 1, 1) is None
    proc = subprocess.run([*args, "resume=true"], check=False, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 1 copy 1/2: the returned copy would be refused" in proc.stdout + proc.stderr
    assert (out / "COMPLETE").exists()
