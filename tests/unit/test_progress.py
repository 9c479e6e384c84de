"""Progress: a tqdm bar on a terminal, plain log lines otherwise."""

import io
import logging

from mpu_cli.progress import LogProgress, tqdm


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_progress_is_plain_log_lines(caplog, monkeypatch):
    monkeypatch.delenv("MPU_PROGRESS", raising=False)
    with caplog.at_level(logging.INFO, logger="mpu_cli.progress"):
        bar = tqdm(range(3), desc="round 1/1 copy 1/2", unit="epoch", file=io.StringIO())
        assert isinstance(bar, LogProgress)
        assert [i for i in bar] == [0, 1, 2]
        with tqdm(total=4, desc="eval forget", file=io.StringIO()) as b:
            b.update(4)
            b.set_postfix(loss="0.123")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("round 1/1 copy 1/2: 3/3 epoch in ")
    assert lines[1].startswith("eval forget: 4/4 it in ") and lines[1].endswith("(loss=0.123)")
    assert "\r" not in "".join(lines)


def test_throttled_lines_while_running(caplog):
    with caplog.at_level(logging.INFO, logger="mpu_cli.progress"):
        for _ in LogProgress(range(5), desc="train", unit="epoch", interval=0.0):
            pass
    assert len(caplog.records) == 5  # 4 intermediate + the final one


def test_on_a_terminal_a_bar_and_disable_true_is_silent(monkeypatch):
    monkeypatch.delenv("MPU_PROGRESS", raising=False)
    out = _Tty()
    bar = tqdm(range(2), desc="x", file=out)
    assert not isinstance(bar, LogProgress)
    list(bar)
    assert "x" in out.getvalue()
    silent = tqdm(range(2), desc="y", disable=True, file=io.StringIO())
    assert not isinstance(silent, LogProgress) and list(silent) == [0, 1]
