"""run.launcher's watch, reaper and failure messages, driven with plain processes (no torch), and
run.runfiles, the run-directory contract between the launcher and the ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from logitsmatch.run import launcher
from logitsmatch.run.runfiles import PHASES, RUN_ID_ENV, PhaseRecorder, RunDir


def sleeper(tag: str | None = None, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, **({RUN_ID_ENV: tag} if tag else {})}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                            start_new_session=new_session)


def write_status(run: RunDir, rank: int, phase: str, pid: int) -> None:
    run.rank_status_file(rank).write_text(json.dumps({"phase": phase, "pid": pid}))


@pytest.fixture
def ranks(tmp_path):
    procs = [sleeper() for _ in range(3)]
    run = RunDir(tmp_path)
    run.status.mkdir()
    for rank, proc in enumerate(procs):
        write_status(run, rank, "decode", proc.pid)
    yield run, procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_watch_names_a_dead_rank_and_its_phase(ranks):
    status, procs = ranks
    watch = launcher.RunWatch(status, 3)
    assert watch.check() is None
    procs[1].kill()
    time.sleep(0.2)  # a zombie until reaped: counts as dead
    fault = watch.check()
    assert fault.rank == 1 and "rank 1" in fault.summary and "died in phase 'decode'" in fault.summary


def test_watch_blames_the_first_rank_to_go_not_those_the_zygote_stopped(ranks):
    """Seen gone in the same look: a SIGKILLed rank is blamed over one ended by SIGTERM (the zygote's doing)."""
    status, procs = ranks
    watch = launcher.RunWatch(status, 3)
    procs[0].terminate()
    procs[2].kill()
    time.sleep(0.3)  # both zombies (not yet waited for): their exit status is readable
    assert launcher.exit_status(procs[0].pid) == "killed by SIGTERM"
    fault = watch.check()
    assert fault.rank == 2, fault.summary
    assert fault.summary.startswith("rank 2 (pid") and "died in phase 'decode' (killed by SIGKILL)" in fault.summary
    assert fault.summary.endswith("rank 0 ended after it")


def test_watch_ignores_a_rank_that_finished(ranks):
    status, procs = ranks
    write_status(status, 2, "done", procs[2].pid)
    procs[2].kill()
    procs[2].wait()
    assert launcher.RunWatch(status, 3).check() is None


def test_watch_names_a_stopped_rank_after_a_second(ranks):
    status, procs = ranks
    watch = launcher.RunWatch(status, 3)
    os.kill(procs[0].pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)
        assert watch.check() is None  # not yet confirmed
        time.sleep(launcher.STOPPED_CONFIRM_S)
        fault = watch.check()
        assert fault.rank == 0 and "stopped" in fault.summary and "'decode'" in fault.summary
    finally:
        os.kill(procs[0].pid, signal.SIGCONT)


def test_watch_names_a_dead_coordinator_only_while_rank0_needs_it(ranks):
    status, _ = ranks
    coordinator = sleeper()
    status.write_network({"coordinator_pid": coordinator.pid})
    watch = launcher.RunWatch(status, 3)
    assert watch.check() is None and watch.coordinator == coordinator.pid
    coordinator.kill()
    coordinator.wait()
    fault = watch.check()
    assert fault.rank is None and "coordinator" in fault.summary and "rank 0" in fault.summary
    write_status(status, 0, "shutdown", ranks[1][0].pid)  # it exits by design once rank 0 shuts down
    assert watch.check() is None


def test_reap_ends_the_session_and_everything_tagged(tmp_path):
    """Tagged processes in other sessions, and stopped ones, are ended too; others are left alone."""
    tag = f"test-reap-{os.getpid()}"
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                              env={**os.environ, RUN_ID_ENV: tag})
    escaped = sleeper(tag, new_session=True)
    stopped = sleeper(tag, new_session=True)
    bystander = sleeper()
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        assert set(launcher.processes_tagged(tag)) == {leader.pid, escaped.pid, stopped.pid}
        started = time.monotonic()
        assert launcher.reap(leader, tag) == []
        assert time.monotonic() - started < 2 * launcher.GRACE_S
        assert launcher.processes_tagged(tag) == []
        assert bystander.poll() is None
    finally:
        for proc in (leader, escaped, stopped, bystander):
            proc.kill()
            proc.wait()


def test_describe_failure_quotes_the_rank_log(tmp_path):
    run = RunDir(tmp_path / "run")
    run.status.mkdir(parents=True)
    log = run.rank_stderr(2)
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(f"line {i}" for i in range(40)) + "\nRuntimeError: boom\n")
    write_status(run, 2, "weights", 1)
    message = launcher.describe_failure("rank 2 (pid 1) died in phase 'weights'", run, 4, 2)
    first, *rest = message.splitlines()
    assert first.startswith("rank 2 (pid 1) died in phase 'weights'") and "2=weights" in first and "0=init" in first
    assert rest[-1] == "RuntimeError: boom" and len(rest) == launcher.LOG_TAIL_LINES + 1




def test_run_dir_contract_round_trips(tmp_path):
    """What a rank writes through runfiles is what the launcher and the harness read back."""
    run = RunDir.create(tmp_path / "result")
    assert run.root.parent.name == ".runs" and run.status.is_dir() and run.tmp.is_dir()
    assert run.missing_outputs() == [run.result, run.network_file, run.stand_ins_file]
    run.write_plan({"world_size": 8})
    assert run.read_plan() == {"world_size": 8}
    recorder = PhaseRecorder(run, 3)
    assert run.rank_status(3) == {"phase": "init", "pid": None, "timings_s": {}}
    recorder.enter("init")
    recorder.enter("weights")
    status = run.rank_status(3)
    assert status["phase"] == "weights" and status["pid"] == os.getpid() and set(status["timings_s"]) == {"init"}
    recorder.finish()
    assert run.rank_phases(4) == {0: "init", 1: "init", 2: "init", 3: "done"}
    with pytest.raises(ValueError, match="unknown phase"):
        recorder.enter("warmup")
    run.write_network({"coordinator": "tcp://127.0.0.1:1"})
    run.write_stand_ins(["a"])
    run.write_result({"0": {}})
    assert run.missing_outputs() == [] and run.read_stand_ins() == ["a"]
    assert not list(run.root.rglob("*.tmp"))
    assert PHASES[-1] == "done"
