"""Fault injection into real TP8 runs, shared by tests/inference/test_faults.py and scripts/fault_campaign.py.

``LiveRun`` starts ``logitsmatch run`` on the tiny suite in the background in
its own results folder; each ``fault_*`` waits for the phase it needs, injects
the fault and returns an ``Outcome``: exit code, time to end, processes left
behind, whether anything was published, whether a harness traceback reached
stderr, and the fragments the failure message must name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.run.launcher import coordinator_pid, processes_tagged
from logitsmatch.run.runfiles import PHASES, RunDir
from support import PROJECT, TINY_SUITE, installed_toolchain

SUITE = TINY_SUITE
RESULT_NAME = "result.json"
WORLD_SIZE = 8
GRACE_S = 15.0  # reaping (<= 2 x 5 s) plus interpreter start and exit
DEFAULT_TIMEOUT_S = 300.0


def harness_traceback(stderr: str) -> bool:
    """A traceback of the logitsmatch process itself (quoted rank logs after '--- last lines of' do not count)."""
    own = stderr.split("--- last lines of", 1)[0]
    return "Traceback (most recent call last)" in own


# A parent that starts the run and waits for it, as nox does (stands in for nox in the orphan faults).
PARENT = "import subprocess, sys; sys.exit(subprocess.Popen(sys.argv[1:]).wait())"


class LiveRun:
    """One ``logitsmatch run`` in the background, with its results folder and run dir; use it as
    ``with LiveRun(...) as run:``, which ends everything of the run on the way out.

    With ``under_parent`` the run is started by a waiting parent process (as nox starts it);
    ``process`` is then that parent.
    """

    def __init__(self, results_root: Path, toolchain: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 extra_args: tuple[str, ...] = (), env: dict | None = None, name: str = "run",
                 under_parent: bool = False):
        self.results_root = Path(results_root)
        self.results_root.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.out = open(self.results_root / f"{name}.stdout", "w+")
        self.err = open(self.results_root / f"{name}.stderr", "w+")
        # --keep-run-dir: the run dir's name is the run's process tag, needed for the orphan scan.
        command = [sys.executable, "-m", "logitsmatch", "run", SUITE, "--toolchain", toolchain,
                   "--timeout", str(timeout_s), "--no-compare", "--keep-run-dir", *extra_args]
        if under_parent:
            command = [sys.executable, "-c", PARENT, *command]
        self.under_parent = under_parent
        pythonpath = os.pathsep.join(filter(None, [str(PROJECT / "tools"), os.environ.get("PYTHONPATH")]))
        self.started = time.monotonic()
        # Its own process group, like a shell job: Ctrl-C is SIGINT to that group.
        self.process = subprocess.Popen(
            command, cwd=PROJECT, stdout=self.out, stderr=self.err, start_new_session=True,
            env={**os.environ, "PYTHONPATH": pythonpath, "LOGITSMATCH_RESULTS": str(self.results_root), **(env or {})},
        )
        self.run_id: str | None = None
        self.ended: float | None = None

    # --- where the run is -------------------------------------------------------------
    @property
    def result_dir(self) -> Path:
        return self.results_root / SUITE / "cpu" / (installed_toolchain() or "unknown")

    def run_dir(self) -> Path | None:
        pid = "*" if self.under_parent else self.process.pid
        found = sorted(self.results_root.glob(f"{SUITE}/*/*/.runs/*-{pid}-*"))
        if found:
            self.run_id = found[0].name
            return found[0]
        return None

    @property
    def run_pid(self) -> int | None:
        """The ``logitsmatch run`` process (its pid is in the run dir's name)."""
        if self.under_parent:
            return int(self.run_id.split("-")[1]) if self.run_id or self.run_dir() else None
        return self.process.pid

    def wait_until_gone(self, timeout: float) -> float:
        """Seconds until neither the run's process nor any process tagged with the run is left."""
        started = time.monotonic()
        pid = self.run_pid
        while time.monotonic() - started < timeout:
            alive = pid is not None and Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid)
            if not alive and not self.leftovers():
                break
            time.sleep(0.1)
        return time.monotonic() - started

    def status(self, rank: int) -> dict:
        run_dir = self.run_dir()
        return RunDir(run_dir).rank_status(rank) if run_dir else {"phase": "init", "pid": None}

    def wait_for(self, predicate, what: str, timeout: float | None = None):
        """Poll ``predicate()`` until it returns something truthy; fail if the run ends first."""
        deadline = time.monotonic() + (timeout or self.timeout_s)
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the run ended (rc {self.process.returncode}) before {what}:\n{self.stderr()[-3000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_phase(self, rank: int, phase: str, timeout: float | None = None) -> int:
        """Wait until ``rank`` is in ``phase`` or later; its pid."""
        def reached():
            status = self.status(rank)
            if status["pid"] and PHASES.index(status["phase"]) >= PHASES.index(phase):
                return status["pid"]
            return None
        return self.wait_for(reached, f"rank {rank} in phase {phase}", timeout)

    # --- its end ----------------------------------------------------------------------
    def finish(self, timeout: float | None = None) -> int:
        try:
            self.process.wait(timeout=timeout or self.timeout_s + 2 * GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.ended = time.monotonic()
        self.run_dir()
        return self.process.returncode

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def stdout(self) -> str:
        if not self.out.closed:
            self.out.flush()
        return Path(self.out.name).read_text()

    def stderr(self) -> str:
        if not self.err.closed:
            self.err.flush()
        return Path(self.err.name).read_text()

    def leftovers(self) -> list[int]:
        return processes_tagged(self.run_id) if self.run_id else []

    def published(self) -> bool:
        return (self.result_dir / RESULT_NAME).exists()

    def kill(self) -> None:
        """Test cleanup: end everything of this run, whatever state it is in."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc_info) -> None:
        """Whatever happened inside the ``with``: nothing of the run is left, its logs are closed."""
        self.kill()
        self.out.close()
        self.err.close()


# --- faults ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    rc: int
    expected_rc: tuple[int, ...]
    elapsed_s: float
    deadline_s: float
    after_injection_s: float | None
    leftovers: list[int]
    published: bool
    traceback: bool
    message: str
    checks: list[str] = field(default_factory=list)  # fragments the message must contain

    @property
    def within_deadline(self) -> bool:
        return self.elapsed_s <= self.deadline_s + GRACE_S

    def problems(self) -> list[str]:
        problems = []
        if self.rc not in self.expected_rc:
            problems.append(f"exit code {self.rc}, expected {self.expected_rc}")
        if not self.within_deadline:
            problems.append(f"took {self.elapsed_s:.1f} s, deadline {self.deadline_s:.0f} s + {GRACE_S:.0f} s grace")
        if self.leftovers:
            problems.append(f"left processes {self.leftovers}")
        if self.published and self.rc != 0:
            problems.append("a failed run published a result")
        if self.traceback:
            problems.append("a traceback of the harness reached stderr")
        problems += [f"message lacks {fragment!r}" for fragment in self.checks if fragment not in self.message]
        return problems


def _outcome(name: str, run: LiveRun, rc: int, expected: tuple[int, ...], injected_at: float | None, checks) -> Outcome:
    stderr = run.stderr()
    return Outcome(
        name=name, rc=rc, expected_rc=expected, elapsed_s=run.elapsed, deadline_s=run.timeout_s,
        after_injection_s=(run.ended - injected_at) if injected_at else None,
        leftovers=run.leftovers(), published=run.published(), traceback=harness_traceback(stderr),
        message=stderr if rc != 0 else run.stdout(), checks=list(checks),
    )


def fault_sigkill_rank(root: Path, toolchain: str, timeout: float, rank: int = 3) -> Outcome:
    """SIGKILL one rank mid-decode: the others block in a collective; the launcher sees the rank gone."""
    with LiveRun(root, toolchain, timeout) as run:
        run.wait_phase(0, "decode")
        pid = run.wait_phase(rank, "decode")
        os.kill(pid, signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("SIGKILL rank mid-decode", run, rc, (3,), injected, [f"rank {rank}", "died", "'decode'"])


def fault_sigstop_rank(root: Path, toolchain: str, timeout: float, rank: int = 5, phase: str = "decode") -> Outcome:
    """SIGSTOP one rank: nothing exits, every collective waits; the launcher sees state T."""
    with LiveRun(root, toolchain, timeout) as run:
        pid = run.wait_phase(rank, phase)
        os.kill(pid, signal.SIGSTOP)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome(f"SIGSTOP rank in {phase}", run, rc, (3,), injected, [f"rank {rank}", "stopped"])


def fault_kill_coordinator(root: Path, toolchain: str, timeout: float) -> Outcome:
    """SIGKILL the ZMQ coordinator (rank 0's child) mid-decode: rank 0's engine would wait forever."""
    with LiveRun(root, toolchain, timeout) as run:
        run.wait_phase(0, "decode")
        pid = run.wait_for(lambda: coordinator_pid(RunDir(run.run_dir())), "the coordinator process")
        os.kill(pid, signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("kill the coordinator mid-decode", run, rc, (3,), injected, ["coordinator", "died", "rank 0"])


def fault_ctrl_c(root: Path, toolchain: str, timeout: float, phase: str = "decode", sig=signal.SIGINT) -> Outcome:
    """Ctrl-C: SIGINT to the `logitsmatch run` process group, as a terminal sends it (or SIGTERM, as CI does)."""
    with LiveRun(root, toolchain, timeout) as run:
        run.wait_phase(0, phase)
        if phase in ("coordinator", "decode"):
            run.wait_for(lambda: coordinator_pid(RunDir(run.run_dir())), "the coordinator process")
        os.killpg(run.process.pid, sig)
        injected = time.monotonic()
        rc = run.finish()
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        return _outcome(f"{name} in {phase}", run, rc, (130,), injected, ["interrupted"])


def fault_deadline(root: Path, toolchain: str, timeout: float = 12.0) -> Outcome:
    """A deadline far too short: the run ends at it, ranks and all, naming the phase it reached."""
    with LiveRun(root, toolchain, timeout) as run:
        rc = run.finish()
        return _outcome("deadline passes", run, rc, (3,), None, ["deadline of", "phase"])


@contextlib.contextmanager
def taken_loopback_port():
    """A 127.0.0.1 port held by another socket for the duration."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def fault_master_port_taken(root: Path, toolchain: str, timeout: float) -> Outcome:
    """The torch rendezvous (master) port is taken by another process (LOGITSMATCH_MASTER_PORT)."""
    with taken_loopback_port() as port:
        with LiveRun(root, toolchain, timeout, env={"LOGITSMATCH_MASTER_PORT": str(port)}) as run:
            rc = run.finish()
            return _outcome("master port taken", run, rc, (3,), None, [f"127.0.0.1:{port}", "already in use", "'init'"])


def fault_coordinator_port_taken(root: Path, toolchain: str, timeout: float) -> Outcome:
    """The coordinator port asked for is taken: megatron-core binds another, and the run says so."""
    with taken_loopback_port() as port:
        with LiveRun(root, toolchain, timeout, env={"LOGITSMATCH_COORDINATOR_PORT": str(port)}) as run:
            rc = run.finish()
            return _outcome("coordinator port taken", run, rc, (0,), None, [f"coordinator port {port} was taken"])


def fault_sigkill_zygote(root: Path, toolchain: str, timeout: float) -> Outcome:
    """SIGKILL the run's zygote mid-decode: the ranks lose their supervisor; the launcher still reaps them."""
    with LiveRun(root, toolchain, timeout) as run:
        run.wait_phase(0, "decode")
        zygote = json.loads((run.run_dir() / "status" / "zygote.json").read_text())["pid"]
        os.kill(zygote, signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("SIGKILL the zygote", run, rc, (3,), injected, ["the zygote", "killed by SIGKILL"])


ORPHAN_GRACE_S = 20.0  # from SIGKILL of a parent to the last process of the run gone


def _state(pid: int) -> bytes:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return b"X"
    return stat[stat.rindex(b")") + 2:].split()[0]


def fault_parent_sigkill(root: Path, toolchain: str, timeout: float, under_parent: bool = False) -> Outcome:
    """SIGKILL of `logitsmatch run` itself mid-decode (an OOM killer), or of the parent that started it
    (nox, a CI runner): nothing may survive it; every process of the run is gone within seconds."""
    with LiveRun(root, toolchain, timeout, under_parent=under_parent) as run:
        run.wait_phase(0, "decode")
        run.wait_for(lambda: coordinator_pid(RunDir(run.run_dir())), "the coordinator process")
        os.kill(run.process.pid, signal.SIGKILL)
        injected = time.monotonic()
        run.process.wait()
        gone_after = run.wait_until_gone(ORPHAN_GRACE_S)
        run.ended = injected + gone_after
        name = "SIGKILL the parent (nox) of `logitsmatch run`" if under_parent else "SIGKILL `logitsmatch run` itself"
        outcome = _outcome(name, run, run.process.returncode, (-signal.SIGKILL,), injected, [])
        if gone_after >= ORPHAN_GRACE_S:
            outcome.checks.append(f"every process gone within {ORPHAN_GRACE_S:.0f} s")
        return outcome


def fault_truncated_checkpoint(root: Path, toolchain: str, timeout: float, source: Path) -> Outcome:
    """A checkpoint whose tensor files are cut in half: the ranks fail in 'weights', the run says so."""
    broken = root / "broken_checkpoint"
    shutil.copytree(source, broken)
    for shard in broken.rglob("*.distcp"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    vocab = PROJECT / "model_configs" / "tokenizer" / "logitsmatch-bpe-2048.vocab.json"
    extra_args = ("--checkpoint", str(broken), "--tokenizer-model", str(vocab))
    with LiveRun(root, toolchain, timeout, extra_args=extra_args) as run:
        rc = run.finish()
        return _outcome("truncated checkpoint shards", run, rc, (3,), None, ["'weights'", "rank"])


def concurrent_runs(root: Path, toolchain: str, timeout: float) -> list[Outcome]:
    """Two runs of the same suite at once, sharing the results folder and the checkpoint cache."""
    with (LiveRun(root / "shared", toolchain, timeout, name="run0") as first,
          LiveRun(root / "shared", toolchain, timeout, name="run1") as second):
        runs = [first, second]
        codes = [run.finish() for run in runs]
        outcomes = [
            _outcome(f"concurrent run {index + 1} of 2", run, rc, (0,), None, ["coordinator tcp://127.0.0.1:"])
            for index, (run, rc) in enumerate(zip(runs, codes))
        ]
        ports = [line for run in runs for line in run.stdout().splitlines() if "coordinator tcp://" in line]
        if len(set(ports)) != len(ports):
            outcomes[-1].checks.append("two runs on distinct coordinator ports")
        published = runs[0].result_dir
        provenance = json.loads((published / "result.provenance.json").read_text())
        if provenance["network"]["coordinator"] not in runs[0].stdout() + runs[1].stdout():
            outcomes[-1].checks.append("the published provenance belongs to one of the runs")
        return outcomes


def checkpoint_of(result_dir: Path) -> Path | None:
    """The cached synthetic checkpoint a successful run used (from its provenance)."""
    from logitsmatch.paths import cache_root
    from logitsmatch.run.synthetic_weights import cache_key

    provenance = result_dir / "result.provenance.json"
    if not provenance.exists():
        return None
    spec = json.loads(provenance.read_text())["weights"]["spec"]
    path = cache_root() / "checkpoints" / cache_key(spec)
    return path if path.is_dir() else None
