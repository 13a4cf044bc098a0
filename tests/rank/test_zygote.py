"""The zygote supervises like torchrun's agent (that a forked rank is indistinguishable from a fresh one:
tests/inference/test_zygote_runs.py)."""

from __future__ import annotations

import os
import signal
import time

from logitsmatch.run.runfiles import RunDir


def _fork(body) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def test_supervise_records_each_exit_and_stops_the_rest_after_the_first_failure(tmp_path):
    """Like torchrun's agent: exit 1 when a rank fails, the survivors get SIGTERM; every exit is on record."""
    from logitsmatch.rank import zygote

    run = RunDir(tmp_path)
    run.status.mkdir()
    run.write_zygote({"pid": os.getpid()})
    pids = {
        _fork(lambda: time.sleep(0.2)): 0,  # exits 0 before the failure
        _fork(lambda: (time.sleep(0.6), os._exit(3))): 1,
        _fork(lambda: time.sleep(60)): 2,  # stopped by the zygote
    }
    started = time.monotonic()
    assert zygote.supervise(pids, run) == 1
    assert time.monotonic() - started < 10
    assert run.read_zygote()["rank_exits"] == {
        "0": "exited with code 0", "1": "exited with code 3", "2": "killed by SIGTERM"}
    assert run.rank_exit(2) == "killed by SIGTERM"


def test_supervise_kills_a_rank_that_ignores_sigterm(tmp_path, monkeypatch):
    from logitsmatch.rank import zygote

    monkeypatch.setattr(zygote, "STOP_GRACE_S", 0.5)
    run = RunDir(tmp_path)
    run.status.mkdir()
    run.write_zygote({"pid": os.getpid()})

    def stubborn():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)

    def killed_after_a_while():  # the stubborn one has set its handler by then
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    pids = {_fork(killed_after_a_while): 0, _fork(stubborn): 1}
    assert zygote.supervise(pids, run) == 1
    assert run.read_zygote()["rank_exits"] == {"0": "killed by SIGKILL", "1": "killed by SIGKILL"}
