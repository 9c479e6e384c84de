"""A seeded run keeps its seed (from which every round secret derives) out of everything another user can read:
no file outside the server's private folder holds it, nor does the command line or the environment of any
process mpu-run starts; the readable files carry its tag, which reports pair runs by."""
from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from mpu_cli.run import seed_tag

pytestmark = pytest.mark.integration

SEED = "987654321"
FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2", "rounds=1",
        "model.retain=null", f"seed={SEED}"]


def _descendants(pid: int) -> list[int]:
    children = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(p.name))
    return children + [d for c in children for d in _descendants(c)]


def _watch(proc: subprocess.Popen, seen: dict) -> None:
    """The command line and environment of every process below `proc`, polled while it runs."""
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            try:
                seen[pid] = ((Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes()))
            except OSError:
                pass


def _readable_by_others(path: Path, root: Path) -> bool:
    """Another user could read it: the file and every folder down to it from `root` let others in."""
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(d.stat().st_mode & stat.S_IXOTH for d in [path.parent, *path.parent.parents] if d.is_relative_to(root))


@pytest.fixture(scope="module")
def seeded_run(mpu_run_cmd, tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    os.chmod(root, 0o755)
    out = root / "run"
    old = os.umask(0o022)
    try:
        proc = subprocess.Popen([*mpu_run_cmd, *FAST, "transport=files", f"hydra.run.dir={out}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        os.umask(old)
    seen: dict = {}
    watcher = threading.Thread(target=_watch, args=(proc, seen))
    watcher.start()
    stdout, stderr = proc.communicate(timeout=900)
    watcher.join()
    assert proc.returncode == 0, stderr[-3000:]
    return root, out, seen, stdout + stderr


def test_no_readable_file_holds_the_seed(seeded_run):
    root, out, _, output = seeded_run
    readable = [p for p in out.rglob("*") if p.is_file() and _readable_by_others(p, root)]
    assert {"run.json", "results.csv", ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"} <= {
        p.relative_to(out).as_posix() for p in readable}
    assert not [p for p in readable if SEED.encode() in p.read_bytes()]
    assert SEED not in output and SEED not in out.name
    # the seed is kept in the server's private folder only, for the owner
    private = out / "server_private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert any(SEED.encode() in p.read_bytes() for p in private.rglob("*") if p.is_file())


def test_no_process_is_given_the_seed(seeded_run):
    _, _, seen, _ = seeded_run
    assert len(seen) >= 3  # mpu-server init / publish / aggregate, mpu-client
    for cmdline, environ in seen.values():
        assert SEED.encode() not in cmdline and SEED.encode() not in environ, cmdline


def test_the_readable_files_carry_the_seed_tag(seeded_run):
    _, out, _, _ = seeded_run
    cache = os.environ["MPU_CACHE_DIR"]
    tag = seed_tag.tag(int(SEED), cache)
    assert tag.startswith("seed-") and tag == seed_tag.tag(SEED, cache)
    assert pd.read_csv(out / "results.csv").iloc[0]["seed"] == tag
    assert OmegaConf.load(out / ".hydra" / "config.yaml").seed == tag
    assert f"seed={tag}" in OmegaConf.load(out / ".hydra" / "overrides.yaml")
    assert stat.S_IMODE((Path(cache) / seed_tag.KEY_FILE).stat().st_mode) == 0o600
