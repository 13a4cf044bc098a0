"""Start the ranks through the run's zygote and own their whole lifecycle.

The launcher runs the zygote (``logitsmatch.rank.zygote``: it imports torch
and megatron-core once, forks the ranks and serves their rendezvous store on a
socket the launcher bound) in a new session, tags every descendant with
``LOGITSMATCH_RUN_ID`` in its environment, and watches the run until it ends:

* the deadline (the suite's ``timeout_s`` or ``--timeout``);
* a rank process that is gone, or a zombie, before it reported ``done``
  (SIGKILL, a crash, an exception): the surviving ranks would block in a
  collective forever;
* a rank or the coordinator stopped (``T`` in /proc/PID/stat, e.g. SIGSTOP),
  which blocks everyone else's collectives with nothing exiting;
* the ZMQ coordinator (a multiprocessing child of rank 0) gone while
  rank 0 is still in phase ``coordinator`` or ``decode``: rank 0's engine
  would wait for it forever;
* Ctrl-C or SIGTERM to the ``logitsmatch`` process.

On any of them it ends the session and then every process still carrying the
tag (ranks, coordinator, helpers), and raises one message naming the rank (or
the coordinator), the phase (init, weights, coordinator, decode, shutdown) and
the failing rank's last log lines. A successful run must have every rank in
phase ``done`` and rank 0's result on disk.

torch's rendezvous store (a TCPStore in the zygote) listens on every interface
even when told 127.0.0.1 unless it is handed an already-bound socket. The
launcher binds 127.0.0.1 itself and passes the socket to the zygote, which
serves the store on it. The same bound socket also means no other process can
take the port between choosing and using it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import RunFailed
from logitsmatch.run.ports import bind_loopback
from logitsmatch.run.runfiles import (
    LAUNCHER_PID_ENV,
    MASTER_PORT_ENV,
    PHASES,
    RUN_ID_ENV,
    STORE_FD_ENV,
    RunDir,
)

GRACE_S = 5.0  # SIGTERM -> SIGKILL, and SIGKILL -> give up waiting
POLL_S = 0.1
STOPPED_CONFIRM_S = 1.0  # a process must be seen stopped this long to count as stopped
COORDINATOR_SCAN_S = 1.0
LOG_TAIL_LINES = 15


# --- per-rank logs --------------------------------------------------------------------------


@dataclass
class RankLogs:
    """Each rank's stderr, as the zygote redirected it (``RunDir.rank_stderr``)."""

    run: RunDir

    def stderr(self, rank: int) -> Path:
        return self.run.rank_stderr(rank)

    def tail(self, rank: int, lines: int = LOG_TAIL_LINES) -> str:
        path = self.stderr(rank)
        if not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"


# --- /proc --------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), None when gone. The name is cut at the
    last ')': it may itself hold spaces and parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat (R, S, D, T, t, Z, ...), None when gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields is not None else None


def exit_status(pid: int) -> str | None:
    """How a zombie ended ('killed by SIGKILL', 'exited with code 1'); None once reaped or if alive."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] != "Z" or len(fields) < 50:
        return None
    status = int(fields[49])  # exit_code, as waitpid(2) reports it (Linux >= 3.5)
    if status & 0x7F:
        try:
            return f"killed by {signal.Signals(status & 0x7F).name}"
        except ValueError:
            return f"killed by signal {status & 0x7F}"
    return f"exited with code {status >> 8}"


def is_alive(state: str | None) -> bool:
    return state is not None and state not in ("Z", "X", "x")


def is_stopped(state: str | None) -> bool:
    return state in ("T", "t")


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def processes_tagged(run_id: str) -> list[int]:
    """PIDs whose environment carries this run's tag (works after setsid or re-parenting)."""
    needle = f"{RUN_ID_ENV}={run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and is_alive(proc_state(int(entry.name))):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def coordinator_children(parent: int) -> list[int]:
    """Children of rank 0 that run megatron-core's coordinator: started by multiprocessing's 'spawn' (not its
    resource tracker), or forked (the CPU stand-in; same command line as rank 0)."""
    try:
        parent_cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _ppid(int(entry.name)) != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        spawned = b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline
        if spawned or cmdline == parent_cmdline:
            children.append(int(entry.name))
    return children


def coordinator_pid(run: RunDir) -> int | None:
    """The ZMQ coordinator: recorded by rank 0 in network.json, else found as rank 0's child."""
    try:
        pid = run.read_network().get("coordinator_pid")
        if pid:
            return int(pid)
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    rank0 = run.rank_status(0)["pid"]
    if rank0:
        children = coordinator_children(int(rank0))
        if children:
            return children[0]
    return None


# --- watching a live run --------------------------------------------------------------------


@dataclass
class Fault:
    rank: int | None  # the rank to blame; None for the coordinator
    summary: str
    log_rank: int  # whose log to show (the coordinator writes into rank 0's)


class RunWatch:
    """Looks at the ranks and the coordinator once per poll; returns a Fault when one is found.

    When several ranks are gone, the one to blame is the one seen gone first;
    in a tie, one that did not end by SIGTERM (the zygote stops the
    survivors with SIGTERM once it sees the first failure) and whose log
    does not show a lost connection.
    """

    def __init__(self, run: RunDir, world_size: int):
        self.run = run
        self.world_size = world_size
        self.stopped_since: dict[int, float] = {}
        self.dead: dict[int, list] = {}  # rank -> [first seen gone, pid, how it ended or None]
        self.coordinator: int | None = None
        self._last_scan = 0.0

    def _stopped_long_enough(self, pid: int, state: str | None) -> bool:
        if not is_stopped(state):
            self.stopped_since.pop(pid, None)
            return False
        first = self.stopped_since.setdefault(pid, time.monotonic())
        return time.monotonic() - first >= STOPPED_CONFIRM_S

    def check(self) -> Fault | None:
        now = time.monotonic()  # one time per look: ranks found gone together tie
        for rank in range(self.world_size):
            status = self.run.rank_status(rank)
            pid, phase = status["pid"], status["phase"]
            if not pid or phase == "done":
                continue
            state = proc_state(pid)
            if not is_alive(state):
                how = exit_status(pid) or self.run.rank_exit(rank)  # a zombie, or the zygote's record of it
                if self.run.rank_status(rank)["phase"] == "done":  # it finished just now
                    continue
                entry = self.dead.setdefault(rank, [now, pid, None])
                entry[2] = entry[2] or how
            elif self._stopped_long_enough(pid, state):
                return Fault(
                    rank,
                    f"rank {rank} (pid {pid}) is stopped (process state {state}, e.g. SIGSTOP) in phase "
                    f"'{phase}'; the other ranks would wait for it forever",
                    rank,
                )
        if self.dead:
            return self._dead_rank_fault()
        return self._check_coordinator()

    def _dead_rank_fault(self) -> Fault:
        logs = RankLogs(self.run)

        def blame(rank: int):
            seen, _, how = self.dead[rank]
            terminated = 2 if how == "killed by SIGTERM" else (1 if how is None else 0)
            tail = logs.tail(rank, 30)
            secondary = any(sign in tail for sign in ("got signal", "Connection closed", "Connection reset",
                                                      "Broken pipe", "Stack (most recent call first)"))
            return (seen, terminated, secondary, rank)

        first = min(self.dead, key=blame)
        _, pid, how = self.dead[first]
        phase = self.run.rank_status(first)["phase"]
        summary = f"rank {first} (pid {pid}) died in phase '{phase}'" + (f" ({how})" if how else "")
        others = sorted(rank for rank in self.dead if rank != first)
        if others:
            summary += f"; rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} ended after it"
        return Fault(first, summary, first)

    def _check_coordinator(self) -> Fault | None:
        rank0 = self.run.rank_status(0)
        if rank0["phase"] not in ("coordinator", "decode") or not rank0["pid"]:
            return None
        if self.coordinator is None:
            if time.monotonic() - self._last_scan < COORDINATOR_SCAN_S:
                return None
            self._last_scan = time.monotonic()
            self.coordinator = coordinator_pid(self.run)
            if self.coordinator is None:
                return None
        state = proc_state(self.coordinator)
        what = f"the ZMQ coordinator (pid {self.coordinator}, started by rank 0)"
        if not is_alive(state):
            phase = self.run.rank_status(0)["phase"]
            if phase in ("coordinator", "decode"):
                return Fault(
                    None,
                    f"{what} died while rank 0 was in phase '{phase}'; rank 0's engine would wait for it forever",
                    0,
                )
        elif self._stopped_long_enough(self.coordinator, state):
            return Fault(
                None, f"{what} is stopped (process state {state}, e.g. SIGSTOP) in phase '{rank0['phase']}'", 0
            )
        return None


def failing_rank(phases: dict[int, str], logs: RankLogs) -> int:
    """The rank to blame: one whose log shows an error, else the one furthest behind."""
    for rank in sorted(phases):
        if "Traceback" in logs.tail(rank, 200) or "Error" in logs.tail(rank, 5):
            return rank
    return min(phases, key=lambda rank: (PHASES.index(phases[rank]) if phases[rank] in PHASES else 0, rank))


def describe_failure(summary: str, run: RunDir, world_size: int, log_rank: int | None = None) -> str:
    """One message: what happened (rank and phase), every rank's phase, the failing rank's last log lines."""
    logs = RankLogs(run)
    phases = run.rank_phases(world_size)
    if log_rank is None:
        log_rank = failing_rank(phases, logs)
        summary = f"{summary}: rank {log_rank} in phase '{phases[log_rank]}'"
    tail = logs.tail(log_rank)
    source = f"rank {log_rank} ({logs.stderr(log_rank)})"
    zygote_log = run.launcher_log
    if tail in ("(no log)", "(empty log)") and zygote_log.exists() and zygote_log.stat().st_size:
        lines = zygote_log.read_text(errors="replace").rstrip().splitlines()
        tail, source = "\n".join(lines[-LOG_TAIL_LINES:]), f"the zygote ({zygote_log})"
    return (
        f"{summary} (phases: {' '.join(f'{r}={p}' for r, p in sorted(phases.items()))})\n"
        f"--- last lines of {source} ---\n{tail}"
    )


# --- reaping ----------------------------------------------------------------------------------


@contextmanager
def _signals(handler):
    """Install ``handler`` for SIGINT and SIGTERM for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def reap(process: subprocess.Popen, run_id: str) -> list[int]:
    """End the launcher's session, then anything else still tagged with the run.

    Runs with SIGINT and SIGTERM ignored so a second Ctrl-C cannot leave half
    the tree behind. Returns the PIDs that survived SIGKILL (normally none).
    """
    with _signals(signal.SIG_IGN):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            for pid in processes_tagged(run_id):
                try:
                    os.kill(pid, signal.SIGCONT)  # a stopped process only acts on SIGKILL otherwise
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline:
                if process.poll() is not None and not processes_tagged(run_id):
                    return []
                time.sleep(0.1)
        try:
            process.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        return processes_tagged(run_id)


# --- launching --------------------------------------------------------------------------------


def zygote_command(run: RunDir) -> list[str]:
    return [sys.executable, "-m", "logitsmatch.rank.zygote", str(run.plan)]


def launch(run: RunDir, world_size: int, deadline_s: float, env: dict[str, str]) -> float:
    """Run all ranks of ``run.plan`` to completion within the deadline; return wall seconds.

    Raises RunFailed (after reaping everything, with RUN_DIR/FAILED written) on
    a fault, a non-zero exit or the deadline; KeyboardInterrupt (after
    reaping) on Ctrl-C or SIGTERM.
    """
    started = time.monotonic()
    requested = os.environ.get(MASTER_PORT_ENV)
    try:
        port = int(requested) if requested else 0
        store_socket = bind_loopback(port, "torch rendezvous store port")
    except (ValueError, RunFailed) as exc:
        reason = f"{MASTER_PORT_ENV}={requested!r} is not a port number" if isinstance(exc, ValueError) else exc
        message = f"phase 'init': {reason}"
        run.mark_failed(message)
        raise RunFailed(message) from None
    child_env = {
        **{key: value for key, value in os.environ.items() if key != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"},
        **env,
        # Every torch.load in the ranks is weights-only, even where torch.distributed.checkpoint asks
        # for full unpickling of non-tensor entries: a user checkpoint cannot run code.
        "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
        RUN_ID_ENV: run.run_id,
        STORE_FD_ENV: str(store_socket.fileno()),
        LAUNCHER_PID_ENV: str(os.getpid()),
        "PYTHONUNBUFFERED": "1",
    }
    watch = RunWatch(run, world_size)
    process: subprocess.Popen | None = None
    with _signals(_interrupt), open(run.launcher_log, "wb") as launcher_log:
        try:
            try:
                process = subprocess.Popen(
                    zygote_command(run),
                    env=child_env,
                    stdout=launcher_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(store_socket.fileno(),),
                )
            finally:
                store_socket.close()  # the zygote holds its own copy
            fault = _watch(process, watch, run, world_size, started, deadline_s)
        except BaseException:
            if process is not None:
                reap(process, run.run_id)
            run.mark_failed("interrupted")
            raise
        survivors = reap(process, run.run_id)  # on success nothing should remain; make sure of it
    elapsed = time.monotonic() - started
    if survivors:
        fault = (fault or "phase 'shutdown': the run did not end cleanly") + (
            f"\n(processes {survivors} of the run could not be ended)"
        )
    if fault is not None:
        run.mark_failed(fault)
        raise RunFailed(fault)
    return elapsed


def _watch(
    process: subprocess.Popen, watch: RunWatch, run: RunDir, world_size: int, started: float, deadline_s: float
) -> str | None:
    """Poll until the zygote exits or a fault or the deadline shows up; the failure message, or None."""
    while process.poll() is None:
        found = watch.check()
        if found is not None:
            return describe_failure(found.summary, run, world_size, found.log_rank)
        if time.monotonic() - started > deadline_s:
            return describe_failure(f"deadline of {deadline_s:.0f} s passed", run, world_size)
        time.sleep(POLL_S)
    if process.returncode < 0:  # the zygote itself was killed; its ranks die with it (PR_SET_PDEATHSIG)
        name = (
            signal.Signals(-process.returncode).name
            if -process.returncode in signal.valid_signals()
            else process.returncode
        )
        return describe_failure(f"the zygote (pid {process.pid}) was killed by {name}", run, world_size)
    if process.returncode != 0:
        found = watch.check()  # name the rank if the zygote exited because of one
        if found is not None:
            return describe_failure(found.summary, run, world_size, found.log_rank)
        return describe_failure(f"the zygote exited with code {process.returncode}", run, world_size)
    return _incomplete(run, world_size)


def _incomplete(run: RunDir, world_size: int) -> str | None:
    """A run whose zygote exited 0 still needs every rank done and rank 0's files."""
    phases = run.rank_phases(world_size)
    unfinished = [rank for rank, phase in phases.items() if phase != "done"]
    if unfinished:
        return describe_failure(f"rank {unfinished[0]} exited without finishing", run, world_size, unfinished[0])
    missing = run.missing_outputs()
    if missing:
        return describe_failure(f"rank 0 finished but wrote no {missing[0].name}", run, world_size, 0)
    return None


@contextmanager
def publish_lock(result_dir: Path):
    """Serialise publishing (result, provenance, reports) of runs that share a result folder."""
    import fcntl

    result_dir.mkdir(parents=True, exist_ok=True)
    with open(result_dir / ".publish.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
