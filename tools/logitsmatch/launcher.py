"""Start the ranks with torch's own elastic launcher and own their whole lifecycle.

The launcher runs ``python -m torch.distributed.run`` in a new session, tags
every descendant with ``LOGITSMATCH_RUN_ID`` in its environment, enforces the
run's deadline, and on any failure or interrupt ends the session and then
every process still carrying the tag (ranks, the spawned ZMQ coordinator,
helpers). A failure is reported with the rank, its phase and its last log lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import RunFailed
from logitsmatch.ports import free_loopback_port

GRACE_S = 5.0
POLL_S = 0.2
LOG_TAIL_LINES = 15


@dataclass
class RankLogs:
    """Where torch.distributed.run wrote each rank's stdout/stderr."""

    root: Path

    def stderr(self, rank: int) -> Path | None:
        found = sorted(self.root.glob(f"*/attempt_*/{rank}/stderr.log"))
        return found[-1] if found else None

    def tail(self, rank: int, lines: int = LOG_TAIL_LINES) -> str:
        path = self.stderr(rank)
        if path is None or not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"


def rank_phases(status_dir: Path, world_size: int) -> dict[int, str]:
    phases = {}
    for rank in range(world_size):
        path = status_dir / f"rank-{rank}.json"
        try:
            phases[rank] = json.loads(path.read_text())["phase"]
        except (OSError, ValueError, KeyError):
            phases[rank] = "start"
    return phases


def processes_tagged(run_id: str) -> list[int]:
    """PIDs whose environment carries this run's tag (works after setsid or re-parenting)."""
    needle = f"LOGITSMATCH_RUN_ID={run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def reap(process: subprocess.Popen, run_id: str) -> None:
    """End the launcher's session, then anything else still tagged with the run."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        for pid in processes_tagged(run_id):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            if process.poll() is not None and not processes_tagged(run_id):
                return
            time.sleep(POLL_S)
    process.wait()


def failing_rank(phases: dict[int, str], logs: RankLogs) -> int:
    """The rank to blame: one whose log shows an error, else the one furthest behind."""
    for rank in sorted(phases):
        if "Traceback" in logs.tail(rank, 200) or "Error" in logs.tail(rank, 5):
            return rank
    order = ["start", "init", "weights", "coordinator", "decode", "shutdown", "done"]
    return min(phases, key=lambda rank: (order.index(phases[rank]) if phases[rank] in order else 0, rank))


def describe_failure(reason: str, run_dir: Path, world_size: int) -> str:
    logs = RankLogs(run_dir / "logs")
    phases = rank_phases(run_dir / "status", world_size)
    rank = failing_rank(phases, logs)
    return (
        f"{reason}: rank {rank} in phase '{phases[rank]}' "
        f"(phases: {', '.join(f'{r}={p}' for r, p in sorted(phases.items()))})\n"
        f"--- last lines of rank {rank} ({logs.stderr(rank)}) ---\n{logs.tail(rank)}"
    )


def launch(plan_path: Path, run_dir: Path, world_size: int, deadline_s: float, env: dict[str, str]) -> float:
    """Run all ranks to completion within the deadline; return wall seconds.

    Raises RunFailed (after reaping everything) on a non-zero exit or the deadline.
    """
    run_id = run_dir.name
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={world_size}",
        "--nnodes=1",
        "--master-addr=127.0.0.1",
        f"--master-port={free_loopback_port()}",
        "--max-restarts=0",
        f"--log-dir={run_dir / 'logs'}",
        "--redirects=3",
        "-m",
        "logitsmatch.worker",
        str(plan_path),
    ]
    child_env = {**os.environ, **env, "LOGITSMATCH_RUN_ID": run_id, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(run_dir / "launcher.log", "wb") as launcher_log:
        process = subprocess.Popen(
            command, env=child_env, stdout=launcher_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while process.poll() is None:
                if time.monotonic() - started > deadline_s:
                    message = describe_failure(f"deadline of {deadline_s:.0f} s passed", run_dir, world_size)
                    reap(process, run_id)
                    raise RunFailed(message)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            reap(process, run_id)
            raise
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        message = describe_failure(f"ranks exited with code {process.returncode}", run_dir, world_size)
        reap(process, run_id)
        raise RunFailed(message)
    reap(process, run_id)  # nothing should remain; make sure of it
    return elapsed
