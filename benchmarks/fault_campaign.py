"""Fault campaign: inject every lifecycle fault into real TP8 runs and print the figures.

    PYTHONPATH=tools python benchmarks/fault_campaign.py [--only NAME ...] [--timeout S]

Each fault starts ``logitsmatch run`` on the tiny suite (8 gloo ranks, the
ZMQ coordinator, a real InferenceClient) in a fresh results folder, waits for
the phase the fault needs, injects it, and checks that the run ended within
its deadline plus a short grace with the documented exit code and one
message naming the rank and phase, that no process tagged with the run's id
is left, that nothing was published as a result, that no traceback of the
harness itself reached stderr, and that golden_values/ is byte-for-byte
unchanged. Runs go one at a time (the machine has few cores) except in the
concurrency case, which runs two at once on purpose.

The helpers here (LiveRun, the injectors) are also used by tests/test_faults.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.launcher import PHASES, coordinator_pid, processes_tagged, rank_status  # noqa: E402
from logitsmatch.toolchains import load_toolchains  # noqa: E402

SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
WORLD_SIZE = 8
GRACE_S = 15.0  # reaping (<= 2 x 5 s) plus interpreter start and exit
DEFAULT_TIMEOUT_S = 300.0


def installed_toolchain() -> str | None:
    """The pyproject toolchain this interpreter's python, torch and megatron-core match."""
    try:
        versions = {name: importlib.metadata.version(name).split("+")[0] for name in ("torch", "megatron-core")}
    except importlib.metadata.PackageNotFoundError:
        return None
    python = "{}.{}".format(*sys.version_info[:2])
    for name, toolchain in load_toolchains(PROJECT / "pyproject.toml").items():
        if (toolchain.python, toolchain.torch, toolchain.megatron_core) == (
            python,
            versions["torch"],
            versions["megatron-core"],
        ):
            return name
    return None


def goldens_digest() -> dict[str, str]:
    """sha256 of every golden file (and provenance sidecar) under golden_values/, by path."""
    root = PROJECT / "golden_values"
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*.json"))}


def goldens_changed(before: dict[str, str]) -> list[str]:
    after = goldens_digest()
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def harness_traceback(stderr: str) -> bool:
    """A traceback of the logitsmatch process itself (quoted rank logs after '--- last lines of' do not count)."""
    own = stderr.split("--- last lines of", 1)[0]
    return "Traceback (most recent call last)" in own


class LiveRun:
    """One ``logitsmatch run`` in the background, with its results folder and run dir."""

    def __init__(self, results_root: Path, toolchain: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 extra_args: tuple[str, ...] = (), env: dict | None = None, name: str = "run"):
        self.results_root = Path(results_root)
        self.results_root.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.out = open(self.results_root / f"{name}.stdout", "w+")
        self.err = open(self.results_root / f"{name}.stderr", "w+")
        # --keep-run-dir: the run dir's name is the run's process tag, needed for the orphan scan.
        command = [sys.executable, "-m", "logitsmatch", "run", SUITE, "--toolchain", toolchain,
                   "--timeout", str(timeout_s), "--no-compare", "--keep-run-dir", *extra_args]
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
        return self.results_root / SUITE / "cpu" / installed_toolchain_cached()

    def run_dir(self) -> Path | None:
        found = sorted(self.results_root.glob(f"{SUITE}/*/*/.runs/*-{self.process.pid}-*"))
        if found:
            self.run_id = found[0].name
            return found[0]
        return None

    def status(self, rank: int) -> dict:
        run_dir = self.run_dir()
        return rank_status(run_dir / "status", rank) if run_dir else {"phase": "init", "pid": None}

    def wait_for(self, predicate, what: str, timeout: float | None = None):
        """Poll ``predicate()`` until it returns something truthy; fail if the run ends first."""
        deadline = time.monotonic() + (timeout or self.timeout_s)
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended (rc {self.process.returncode}) before {what}:\n{self.stderr()[-3000:]}")
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
        self.out.flush()
        return Path(self.out.name).read_text()

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def leftovers(self) -> list[int]:
        return processes_tagged(self.run_id) if self.run_id else []

    def published(self) -> bool:
        return (self.result_dir / "result.json").exists()

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


_TOOLCHAIN: list[str] = []


def installed_toolchain_cached() -> str:
    if not _TOOLCHAIN:
        _TOOLCHAIN.append(installed_toolchain() or "unknown")
    return _TOOLCHAIN[0]


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
    run = LiveRun(root, toolchain, timeout)
    try:
        run.wait_phase(0, "decode")
        pid = run.wait_phase(rank, "decode")
        os.kill(pid, signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("SIGKILL rank mid-decode", run, rc, (3,), injected, [f"rank {rank}", "died", "'decode'"])
    finally:
        run.kill()


def fault_sigstop_rank(root: Path, toolchain: str, timeout: float, rank: int = 5, phase: str = "decode") -> Outcome:
    """SIGSTOP one rank: nothing exits, every collective waits; the launcher sees state T."""
    run = LiveRun(root, toolchain, timeout)
    try:
        pid = run.wait_phase(rank, phase)
        os.kill(pid, signal.SIGSTOP)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome(f"SIGSTOP rank in {phase}", run, rc, (3,), injected, [f"rank {rank}", "stopped"])
    finally:
        run.kill()


def fault_kill_coordinator(root: Path, toolchain: str, timeout: float) -> Outcome:
    """SIGKILL the ZMQ coordinator (rank 0's spawn child) mid-decode: rank 0's engine would wait forever."""
    run = LiveRun(root, toolchain, timeout)
    try:
        run.wait_phase(0, "decode")
        pid = run.wait_for(lambda: coordinator_pid(run.run_dir() / "status"), "the coordinator process")
        os.kill(pid, signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("kill the coordinator mid-decode", run, rc, (3,), injected, ["coordinator", "died", "rank 0"])
    finally:
        run.kill()


def fault_ctrl_c(root: Path, toolchain: str, timeout: float, phase: str = "decode", sig=signal.SIGINT) -> Outcome:
    """Ctrl-C: SIGINT to the `logitsmatch run` process group, as a terminal sends it (or SIGTERM, as CI does)."""
    run = LiveRun(root, toolchain, timeout)
    try:
        run.wait_phase(0, phase)
        if phase in ("coordinator", "decode"):
            run.wait_for(lambda: coordinator_pid(run.run_dir() / "status"), "the coordinator process")
        os.killpg(run.process.pid, sig)
        injected = time.monotonic()
        rc = run.finish()
        name = "Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name
        return _outcome(f"{name} in {phase}", run, rc, (130,), injected, ["interrupted"])
    finally:
        run.kill()


def fault_deadline(root: Path, toolchain: str, timeout: float = 12.0) -> Outcome:
    """A deadline far too short: the run ends at it, ranks and all, naming the phase it reached."""
    run = LiveRun(root, toolchain, timeout)
    try:
        rc = run.finish()
        return _outcome("deadline passes", run, rc, (3,), None, ["deadline of", "phase"])
    finally:
        run.kill()


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
        run = LiveRun(root, toolchain, timeout, env={"LOGITSMATCH_MASTER_PORT": str(port)})
        try:
            rc = run.finish()
            return _outcome("master port taken", run, rc, (3,), None, [f"127.0.0.1:{port}", "already in use", "'init'"])
        finally:
            run.kill()


def fault_coordinator_port_taken(root: Path, toolchain: str, timeout: float) -> Outcome:
    """The coordinator port asked for is taken: megatron-core binds another, and the run says so."""
    with taken_loopback_port() as port:
        run = LiveRun(root, toolchain, timeout, env={"LOGITSMATCH_COORDINATOR_PORT": str(port)})
        try:
            rc = run.finish()
            return _outcome("coordinator port taken", run, rc, (0,), None, [f"coordinator port {port} was taken"])
        finally:
            run.kill()


def fault_sigkill_agent(root: Path, toolchain: str, timeout: float) -> Outcome:
    """SIGKILL torchrun's agent mid-decode: the ranks lose their supervisor; the launcher still reaps them."""
    run = LiveRun(root, toolchain, timeout)
    try:
        run.wait_phase(0, "decode")
        agents = [pid for pid in processes_tagged(run.run_id) if b"logitsmatch.launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        os.kill(agents[0], signal.SIGKILL)
        injected = time.monotonic()
        rc = run.finish()
        return _outcome("SIGKILL torchrun agent", run, rc, (3,), injected, ["torchrun's agent", "killed by SIGKILL"])
    finally:
        run.kill()


def fault_truncated_checkpoint(root: Path, toolchain: str, timeout: float, source: Path) -> Outcome:
    """A checkpoint whose tensor files are cut in half: the ranks fail in 'weights', the run says so."""
    broken = root / "broken_checkpoint"
    shutil.copytree(source, broken)
    for shard in broken.rglob("*.distcp"):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    vocab = PROJECT / "model_configs" / "tokenizer" / "logitsmatch-bpe-2048.vocab.json"
    run = LiveRun(root, toolchain, timeout, extra_args=("--checkpoint", str(broken), "--tokenizer-model", str(vocab)))
    try:
        rc = run.finish()
        return _outcome("truncated checkpoint shards", run, rc, (3,), None, ["'weights'", "rank"])
    finally:
        run.kill()


def concurrent_runs(root: Path, toolchain: str, timeout: float) -> list[Outcome]:
    """Two runs of the same suite at once, sharing the results folder and the checkpoint cache."""
    runs = [LiveRun(root / "shared", toolchain, timeout, name=f"run{index}") for index in range(2)]
    try:
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
    finally:
        for run in runs:
            run.kill()


def checkpoint_of(result_dir: Path) -> Path | None:
    """The cached synthetic checkpoint a successful run used (from its provenance)."""
    from logitsmatch.paths import cache_root
    from logitsmatch.synthetic_weights import cache_key

    provenance = result_dir / "result.provenance.json"
    if not provenance.exists():
        return None
    spec = json.loads(provenance.read_text())["weights"]["spec"]
    path = cache_root() / "checkpoints" / cache_key(spec)
    return path if path.is_dir() else None


FAULTS = ("sigkill-rank", "sigstop-rank", "kill-coordinator", "ctrl-c", "deadline", "master-port-taken",
          "coordinator-port-taken", "sigkill-agent", "sigstop-rank-weights", "ctrl-c-init", "sigterm-weights",
          "concurrent",
          "truncated-checkpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=FAULTS, help="run only these faults")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="each run's deadline (s)")
    parser.add_argument("--keep", action="store_true", help="keep the results folders")
    args = parser.parse_args(argv)
    toolchain = installed_toolchain()
    if toolchain is None:
        print("this interpreter matches no toolchain in pyproject.toml (needs torch + megatron-core)", file=sys.stderr)
        return 2
    wanted = args.only or FAULTS
    goldens_before = goldens_digest()
    work = Path(tempfile.mkdtemp(prefix="logitsmatch-faults-"))
    outcomes: list[Outcome] = []
    started = time.monotonic()
    t = args.timeout
    plan = {
        "sigkill-rank": lambda d: [fault_sigkill_rank(d, toolchain, t)],
        "sigstop-rank": lambda d: [fault_sigstop_rank(d, toolchain, t)],
        "kill-coordinator": lambda d: [fault_kill_coordinator(d, toolchain, t)],
        "ctrl-c": lambda d: [fault_ctrl_c(d, toolchain, t)],
        "deadline": lambda d: [fault_deadline(d, toolchain)],
        "master-port-taken": lambda d: [fault_master_port_taken(d, toolchain, t)],
        "coordinator-port-taken": lambda d: [fault_coordinator_port_taken(d, toolchain, t)],
        "sigkill-agent": lambda d: [fault_sigkill_agent(d, toolchain, t)],
        "sigstop-rank-weights": lambda d: [fault_sigstop_rank(d, toolchain, t, rank=2, phase="weights")],
        "ctrl-c-init": lambda d: [fault_ctrl_c(d, toolchain, t, phase="init")],
        "sigterm-weights": lambda d: [fault_ctrl_c(d, toolchain, t, phase="weights", sig=signal.SIGTERM)],
        "concurrent": lambda d: concurrent_runs(d, toolchain, t),
    }
    try:
        for name in wanted:
            if name == "truncated-checkpoint":
                continue
            print(f"[fault] {name} ...", flush=True)
            for outcome in plan[name](work / name):
                outcomes.append(outcome)
                _print_outcome(outcome)
        if "truncated-checkpoint" in wanted:
            source = next(filter(None, (checkpoint_of(d / SUITE / "cpu" / toolchain) for d in work.glob("*/shared"))), None)
            if source is None:
                source = checkpoint_of(work / "coordinator-port-taken" / SUITE / "cpu" / toolchain)
            if source is None:
                print("[fault] truncated-checkpoint skipped: needs a successful run first (concurrent or coordinator-port-taken)")
            else:
                print("[fault] truncated-checkpoint ...", flush=True)
                outcome = fault_truncated_checkpoint(work / "truncated", toolchain, t, source)
                outcomes.append(outcome)
                _print_outcome(outcome)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    changed_goldens = goldens_changed(goldens_before)
    failures = [outcome for outcome in outcomes if outcome.problems()]
    faults = [outcome for outcome in outcomes if outcome.expected_rc != (0,)]
    print()
    print(f"toolchain                      {toolchain}")
    print(f"faults injected                {len(faults)} (plus {len(outcomes) - len(faults)} runs that must succeed)")
    print(f"runs ended within deadline     {sum(o.within_deadline for o in outcomes)} of {len(outcomes)}")
    print(f"orphan processes left          {sum(len(o.leftovers) for o in outcomes)}")
    print(f"failed runs that published    {sum(o.published and o.rc != 0 for o in outcomes)}")
    print(f"goldens changed                {len(changed_goldens)}" + (f" {changed_goldens}" if changed_goldens else ""))
    print(f"tracebacks                     {sum(o.traceback for o in outcomes)}")
    print(f"runs with problems             {len(failures)}")
    print(f"campaign wall time             {time.monotonic() - started:.0f} s")
    return 1 if failures or changed_goldens else 0


def _print_outcome(outcome: Outcome) -> None:
    first = next((line for line in outcome.message.splitlines() if line.startswith("logitsmatch run:")), "")
    after = f", ended {outcome.after_injection_s:.1f} s after injection" if outcome.after_injection_s is not None else ""
    verdict = "ok" if not outcome.problems() else "PROBLEM: " + "; ".join(outcome.problems())
    print(f"  rc {outcome.rc}, {outcome.elapsed_s:.1f} s (deadline {outcome.deadline_s:.0f} s){after}, "
          f"leftovers {len(outcome.leftovers)} -> {verdict}")
    if first:
        print(f"  {first[:300]}")


if __name__ == "__main__":
    sys.exit(main())
