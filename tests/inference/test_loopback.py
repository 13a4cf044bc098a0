"""During a live TP8 run, every listening socket of the run's processes is on loopback.

The run's processes are found by their LOGITSMATCH_RUN_ID tag (/proc/PID/environ),
their listening sockets by matching /proc/PID/fd socket inodes against
/proc/PID/net/tcp and tcp6. Sampled from the launch to the end of the run, so
the torch rendezvous store (the zygote), gloo's listeners (ranks), the
engine PUB sockets (rank 0) and the ZMQ coordinator's ROUTER are all seen.
Runs in whichever toolchain venv pytest runs in.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from logitsmatch.run.launcher import coordinator_pid, processes_tagged
from logitsmatch.run.runfiles import RunDir
from support import installed_toolchain
from support.faults import LiveRun
from support.sockets import listening_sockets


def role(pid: int, run_dir: Path) -> str:
    """zygote, rank or coordinator, from what the run recorded (all three share one command line on CPU)."""
    run = RunDir(run_dir)
    if pid == run.read_zygote().get("pid"):
        return "zygote"
    if pid in {run.rank_status(rank)["pid"] for rank in range(8)}:
        return "rank"
    if pid == coordinator_pid(run):
        return "coordinator"
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:60].decode(errors="replace")
    except OSError:
        return "gone"


def test_every_listening_socket_of_a_live_run_is_on_loopback(tmp_path):
    toolchain = installed_toolchain()
    if toolchain is None:
        pytest.fail("this venv matches no toolchain in pyproject.toml")
    seen: dict[tuple[str, int], tuple[str, object]] = {}
    with LiveRun(tmp_path, toolchain, timeout_s=400) as run:
        while run.process.poll() is None:
            if run.run_dir() is not None:
                for listener in listening_sockets(processes_tagged(run.run_id)):
                    seen.setdefault((listener.address, listener.port), (role(listener.pid, run.run_dir()), listener))
            time.sleep(0.2)
        rc = run.finish()
    assert rc == 0, run.stdout()[-2000:] + run.stderr()[-3000:]
    summary = {}
    for name, listener in seen.values():
        summary.setdefault(name, set()).add(listener.address)
    print("listening sockets by process:", {name: (sorted(addresses), sum(1 for n, _ in seen.values() if n == name))
                                            for name, addresses in summary.items()})
    roles = set(summary)
    assert {"zygote", "rank", "coordinator"} <= roles, roles
    exposed = [f"{name}: {listener}" for name, listener in seen.values() if not listener.is_loopback()]
    assert not exposed, exposed
    out = run.stdout()
    assert "coordinator tcp://127.0.0.1:" in out and "engine sockets on 127.0.0.1" in out
