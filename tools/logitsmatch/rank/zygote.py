"""The zygote of one run: pays the start-up once, forks the ranks, serves their store, supervises them.

Started by the launcher as ``python -m logitsmatch.rank.zygote PLAN``. Importing
torch and megatron-core costs about 4 s of CPU per interpreter; eight ranks
each doing it on two cores was most of a tiny run's wall time (docs/performance.md).
On CPU the zygote runs every rank's plan-level preamble once
(``worker.prepare_process``: torch, the stand-ins, the adapter, the engine's
modules) and then forks the ranks, so each starts with it done. Nothing
rank-specific happens before the fork: no thread, no socket, no process group,
no tensor that a rank computes with; a forked rank is the same process a fresh
interpreter becomes after the same imports (tests/inference/test_zygote_runs.py runs A, B, A).
On CUDA a forked child must not inherit an initialised driver, so the zygote
only forks and each rank prepares itself after choosing its GPU; so does every
rank on CPU when ``LOGITSMATCH_FRESH_RANKS=1`` (to rule the zygote out).

After the fork the zygote serves torch's rendezvous store (a TCPStore) on the
loopback socket the launcher bound (``STORE_FD_ENV``): handed an already-bound
socket it cannot listen on other interfaces, and no process can take the port
in between. The ranks reach it as torchrun's ranks reach their agent's store
(``TORCHELASTIC_USE_AGENT_STORE``). It then waits for the ranks like
torchrun's agent: each exit is recorded in ``status/zygote.json`` before the
process is reaped (so how a rank ended is never lost), and the first failure
stops the others with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from logitsmatch.lifetime import die_with_parent
from logitsmatch.run.runfiles import FRESH_RANKS_ENV, LAUNCHER_PID_ENV, STORE_FD_ENV, RunDir

STOP_GRACE_S = 5.0  # a failed run: SIGTERM to the other ranks, then SIGKILL after this long
STORE_TIMEOUT_S = 600.0
LISTEN_BACKLOG = 512


def rank_environment(rank: int, world_size: int, port: int, run_id: str) -> dict[str, str]:
    """What torchrun's agent sets for its workers, for a single node, one attempt, no restarts."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "GROUP_RANK": "0",
        "ROLE_RANK": str(rank),
        "ROLE_NAME": "default",
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "GROUP_WORLD_SIZE": "1",
        "ROLE_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",  # init_process_group connects to the zygote's store
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": run_id,
    }


def start_rank(rank: int, world_size: int, port: int, run: RunDir, plan: dict, prepared, store_fd: int) -> int:
    """Fork rank ``rank``; the child never returns (it runs the rank and exits)."""
    sys.stdout.flush()
    sys.stderr.flush()
    zygote = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        die_with_parent(zygote, signal.SIGTERM)
        os.close(store_fd)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.update(rank_environment(rank, world_size, port, run.run_id))
        log_dir = run.rank_log_dir(rank)
        log_dir.mkdir(parents=True, exist_ok=True)
        for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
            target = os.open(log_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        from logitsmatch.rank import worker

        worker.run(plan, run, prepared)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def how_it_ended(info: os.waitid_result) -> tuple[str, bool]:
    """('exited with code N' or 'killed by SIGX', whether that is success) from waitid(2)."""
    if info.si_code == os.CLD_EXITED:
        return f"exited with code {info.si_status}", info.si_status == 0
    try:
        name = signal.Signals(info.si_status).name
    except ValueError:
        name = f"signal {info.si_status}"
    return f"killed by {name}", False


def supervise(pids: dict[int, int], run: RunDir) -> int:
    """Wait for every rank, as torchrun's agent does; 0 when all exited 0, else 1.

    Each exit is written to ``status/zygote.json`` while the rank is still a zombie
    (``WNOWAIT``), so the launcher either sees the zombie or finds its record. The
    first failure stops the other ranks (SIGTERM, SIGKILL after ``STOP_GRACE_S``).
    """
    exits: dict[int, str] = {}
    failed = False
    kill_at = None
    while len(exits) < len(pids):
        if kill_at is not None and time.monotonic() > kill_at:
            for pid, rank in pids.items():
                if rank not in exits:
                    os.kill(pid, signal.SIGKILL)
            kill_at = None
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT | (os.WNOHANG if kill_at is not None else 0))
        if info is None:  # WNOHANG and nothing ended yet
            time.sleep(0.05)
            continue
        rank = pids.get(info.si_pid)
        if rank is not None:
            how, ok = how_it_ended(info)
            exits[rank] = how
            run.write_rank_exits(exits)
            if not ok and not failed:
                failed = True
                for pid, other in pids.items():
                    if other not in exits:
                        os.kill(pid, signal.SIGTERM)
                kill_at = time.monotonic() + STOP_GRACE_S
        os.waitpid(info.si_pid, 0)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    (plan_path,) = argv
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    die_with_parent(int(launcher) if launcher else None, signal.SIGTERM)
    store_fd = int(os.environ.pop(STORE_FD_ENV))
    run = RunDir(Path(plan_path).parent)
    plan = run.read_plan()
    world_size = int(plan["world_size"])
    started = time.perf_counter()
    prepared = None
    if plan["platform"].get("device") != "cuda" and os.environ.get(FRESH_RANKS_ENV) != "1":
        from logitsmatch.rank import worker

        prepared = worker.prepare_process(plan)
    run.write_zygote({"pid": os.getpid(), "prepare_s": round(time.perf_counter() - started, 3),
                      "prepared_before_fork": prepared is not None})
    store_socket = socket.socket(fileno=store_fd)
    store_socket.listen(LISTEN_BACKLOG)  # ranks may connect before the store serves: they wait in the backlog
    port = store_socket.getsockname()[1]
    pids = {start_rank(rank, world_size, port, run, plan, prepared, store_fd): rank for rank in range(world_size)}

    import datetime

    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", port, 1, True, datetime.timedelta(seconds=STORE_TIMEOUT_S),
                     wait_for_workers=False, multi_tenant=True, master_listen_fd=store_fd)
    try:
        return supervise(pids, run)
    finally:
        del store  # served until every rank has ended


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file the zygote writes is written (atomically) and its ranks have exited: tearing down an
    # interpreter holding torch and megatron-core only costs time (about a second here), so skip it.
    os._exit(code)
