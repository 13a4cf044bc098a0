"""Run lifecycle under faults: every failure ends the run fast, named, reaped, unpublished.

The first part drives the launcher's watch and reaper with plain processes
(no torch). The second injects the four most important faults into real TP8
runs of the tiny suite: SIGKILL of a rank mid-decode, SIGSTOP of a rank, the
ZMQ coordinator killed mid-decode, and Ctrl-C. The rest (deadline, ports
taken, agent killed, truncated checkpoint, two runs at once) is in
benchmarks/fault_campaign.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import PROJECT
from test_fuzz import load_benchmark

from logitsmatch import launcher
from logitsmatch.ports import Listener, bind_loopback, listening_sockets
from logitsmatch.errors import RunFailed

DETECT_S = 30.0  # from injection to the run's end: the watch, not the deadline, must end it
RUN_TIMEOUT_S = 240.0


# --- the watch and the reaper, on plain processes --------------------------------------------------


def sleeper(tag: str | None = None, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, **({launcher.RUN_ID_ENV: tag} if tag else {})}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                            start_new_session=new_session)


def write_status(status_dir, rank: int, phase: str, pid: int) -> None:
    (status_dir / f"rank-{rank}.json").write_text(json.dumps({"phase": phase, "pid": pid}))


@pytest.fixture
def ranks(tmp_path):
    procs = [sleeper() for _ in range(3)]
    status = tmp_path / "status"
    status.mkdir()
    for rank, proc in enumerate(procs):
        write_status(status, rank, "decode", proc.pid)
    yield status, procs
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


def test_watch_blames_the_first_rank_to_go_not_those_the_agent_stopped(ranks):
    """Seen gone in the same look: a SIGKILLed rank is blamed over one ended by SIGTERM (the agent's doing)."""
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
    (status / "network.json").write_text(json.dumps({"coordinator_pid": coordinator.pid}))
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
                              env={**os.environ, launcher.RUN_ID_ENV: tag})
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
    run_dir = tmp_path / "run"
    (run_dir / "status").mkdir(parents=True)
    log = run_dir / "logs" / "none_x" / "attempt_0" / "2" / "stderr.log"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(f"line {i}" for i in range(40)) + "\nRuntimeError: boom\n")
    write_status(run_dir / "status", 2, "weights", 1)
    message = launcher.describe_failure("rank 2 (pid 1) died in phase 'weights'", run_dir, 4, 2)
    first, *rest = message.splitlines()
    assert first.startswith("rank 2 (pid 1) died in phase 'weights'") and "2=weights" in first and "0=init" in first
    assert rest[-1] == "RuntimeError: boom" and len(rest) == launcher.LOG_TAIL_LINES + 1


def test_loopback_helpers():
    sock = bind_loopback(0)
    try:
        sock.listen()
        port = sock.getsockname()[1]
        found = [listener for listener in listening_sockets([os.getpid()]) if listener.port == port]
        assert found == [Listener(os.getpid(), "127.0.0.1", port)] and found[0].is_loopback()
        with pytest.raises(RunFailed, match=f"127.0.0.1:{port} is already in use"):
            bind_loopback(port)
    finally:
        sock.close()
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # what the scan must catch
        try:
            exposed = socket.socket(family, socket.SOCK_STREAM)
            exposed.bind((host, 0))
        except OSError:
            continue
        with exposed:
            exposed.listen()
            port = exposed.getsockname()[1]
            found = [listener for listener in listening_sockets([os.getpid()]) if listener.port == port]
            assert [listener.address for listener in found] == [host] and not found[0].is_loopback()
    assert Listener(1, "::ffff:127.0.0.1", 1).is_loopback() and Listener(1, "::1", 1).is_loopback()
    assert not Listener(1, "::", 1).is_loopback() and not Listener(1, "0.0.0.0", 1).is_loopback()


# --- real TP8 runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign():
    pytest.importorskip("megatron.core")
    module = load_benchmark("fault_campaign")
    if module.installed_toolchain() is None:
        pytest.skip("this venv matches no toolchain in pyproject.toml")
    before = module.goldens_digest()
    yield module
    assert module.goldens_digest() == before, "a fault run changed golden_values/"


def assert_clean_failure(outcome, run_dir_glob) -> None:
    assert not outcome.problems(), (outcome.problems(), outcome.message[-3000:])
    if outcome.after_injection_s is not None:
        assert outcome.after_injection_s < DETECT_S, outcome.after_injection_s
    run_dirs = list(run_dir_glob)
    assert len(run_dirs) == 1 and (run_dirs[0] / "FAILED").is_file()


def runs_under(root):
    return root.glob("*/*/*/.runs/*")


@pytest.mark.inference
def test_master_port_taken(campaign, tmp_path):
    """No ranks start: the launcher cannot bind the rendezvous port and says which."""
    outcome = campaign.fault_master_port_taken(tmp_path, campaign.installed_toolchain(), RUN_TIMEOUT_S)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert outcome.elapsed_s < 60


@pytest.mark.inference
def test_sigkill_rank_mid_decode(campaign, tmp_path):
    outcome = campaign.fault_sigkill_rank(tmp_path, campaign.installed_toolchain(), RUN_TIMEOUT_S, rank=3)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "rank 3 (pid" in outcome.message and "died in phase 'decode'" in outcome.message
    assert "--- last lines of rank 3" in outcome.message


@pytest.mark.inference
def test_sigstop_rank(campaign, tmp_path):
    outcome = campaign.fault_sigstop_rank(tmp_path, campaign.installed_toolchain(), RUN_TIMEOUT_S, rank=5,
                                          phase="weights")
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "rank 5 (pid" in outcome.message and "is stopped" in outcome.message


@pytest.mark.inference
def test_coordinator_killed_mid_decode(campaign, tmp_path):
    outcome = campaign.fault_kill_coordinator(tmp_path, campaign.installed_toolchain(), RUN_TIMEOUT_S)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "the ZMQ coordinator (pid" in outcome.message and "phase 'decode'" in outcome.message
    assert "--- last lines of rank 0" in outcome.message


@pytest.mark.inference
def test_ctrl_c_exits_130_and_reaps_the_coordinator_too(campaign, tmp_path):
    outcome = campaign.fault_ctrl_c(tmp_path, campaign.installed_toolchain(), RUN_TIMEOUT_S, phase="coordinator")
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert outcome.message.strip().splitlines()[-1] == "logitsmatch run: interrupted"


# --- determinism: the same toolchain twice must be bit-identical, and the check must say when not ------


def test_determinism_judge_says_when_runs_differ(tmp_path, capsys):
    import math

    from logitsmatch.determinism_cli import judge

    golden = json.loads((PROJECT / "golden_values" / "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
                         / "golden_values_cpu_py3.11-torch2.13.0-mcore0.16.1.json").read_text())
    first, same, moved = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    first.write_text(json.dumps(golden))
    same.write_text(json.dumps(golden))
    golden["2"]["logprobs"][7] = math.nextafter(golden["2"]["logprobs"][7], 0.0)  # one ulp
    moved.write_text(json.dumps(golden))
    assert judge([first, same], tmp_path)
    assert "DETERMINISTIC: run 2 is bit-identical to run 1" in capsys.readouterr().out
    assert not judge([first, same, moved], tmp_path)
    out = capsys.readouterr().out
    assert "NOT DETERMINISTIC: run 3 differs from run 1" in out and "FAIL" in out
    assert (tmp_path / "report-3.md").is_file()
