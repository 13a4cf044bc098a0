"""The run directory: every file and environment variable the launcher and the ranks exchange.

One run of a suite lives in ``results/<suite>/<platform>/<toolchain>/.runs/<id>/``
until it is published. The harness (``logitsmatch run``, the launcher) and the
processes it starts (the zygote, the ranks it forks, the synthetic-weights writer)
share only what this module names, written and read only through it:

=========================  ===============  =========================================
file                       written by       read by
=========================  ===============  =========================================
``plan.json``              harness          every rank (what to run, see run.plan)
``status/rank-N.json``     rank N           launcher (phase and pid, phase timings), harness (peak RSS)
``status/network.json``    rank 0           launcher (coordinator pid), harness
``status/stand_ins.json``  rank 0           harness (provenance)
``status/served_by.json``  rank 0           harness (which engine served which request)
``status/listening-N``     rank N           rank 0 (rank N's engine receives its broadcasts)
``status/coordinator_     megatron-core's  harness (its own routing record; 0.17+)
schedule.json``            coordinator
``status/inputs-N.json``   rank N           harness (provenance: loaded-weights digest, megatron-core
                                            identity, adapter decisions; what ``explain`` compares)
``capture/rank-N.jsonl``   rank N           ``run --capture``: module outputs (docs/capture_format.md),
``capture/rank-N.npz``     value ranks      published beside the result as ``capture/``
``status/zygote.json``     zygote           launcher (how each rank ended), harness (its start-up seconds)
``result.json``            rank 0           harness (published as the result)
``logs/N/stderr.log``,     rank N           launcher (last lines of a failing rank)
``logs/N/stdout.log``
``launcher.log``           zygote           launcher (what the zygote printed)
``FAILED``                 launcher         people (why the run was not published)
=========================  ===============  =========================================

Environment variables set by the launcher for its descendants are listed
below as ``*_ENV``. Writes that a reader may see half-done go through a
temporary file and ``os.replace``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Phases a rank walks through, in order (``done`` once it finished cleanly).
PHASES = ("init", "weights", "coordinator", "decode", "shutdown", "done")

RUN_ID_ENV = "LOGITSMATCH_RUN_ID"  # on every process of the run: the reaper finds them by it
STORE_FD_ENV = "LOGITSMATCH_STORE_FD"  # the bound loopback socket the zygote's rendezvous store serves on
LAUNCHER_PID_ENV = "LOGITSMATCH_LAUNCHER_PID"  # the zygote dies with this process
COORDINATOR_PORT_ENV = "LOGITSMATCH_COORDINATOR_PORT"  # user: ask megatron-core for this port
MASTER_PORT_ENV = "LOGITSMATCH_MASTER_PORT"  # user: fixed rendezvous store port (default: kernel picks)
# user: "1" makes every rank import and prepare itself after the fork, as on CUDA (rules the zygote out)
FRESH_RANKS_ENV = "LOGITSMATCH_FRESH_RANKS"


def _write_atomic(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=4))
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunDir:
    """One run's private folder; ``RunDir(plan_path.parent)`` inside a rank."""

    root: Path

    @classmethod
    def create(cls, result_dir: Path) -> RunDir:
        """A new, uniquely named run folder under ``result_dir/.runs/``."""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        run = cls(result_dir / ".runs" / name)
        run.status.mkdir(parents=True)
        run.tmp.mkdir()
        return run

    @property
    def run_id(self) -> str:
        return self.root.name

    # --- paths -------------------------------------------------------------------
    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def launcher_log(self) -> Path:
        return self.root / "launcher.log"

    @property
    def failed(self) -> Path:
        return self.root / "FAILED"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def torch_extensions(self) -> Path:
        return self.root / "torch_extensions"

    def rank_log_dir(self, rank: int) -> Path:
        return self.logs / str(rank)

    def rank_stderr(self, rank: int) -> Path:
        return self.rank_log_dir(rank) / "stderr.log"

    @property
    def zygote_file(self) -> Path:
        return self.status / "zygote.json"

    def rank_status_file(self, rank: int) -> Path:
        return self.status / f"rank-{rank}.json"

    @property
    def network_file(self) -> Path:
        return self.status / "network.json"

    @property
    def stand_ins_file(self) -> Path:
        return self.status / "stand_ins.json"

    @property
    def served_by_file(self) -> Path:
        return self.status / "served_by.json"

    @property
    def coordinator_schedule_file(self) -> Path:
        return self.status / "coordinator_schedule.json"

    def inputs_file(self, rank: int) -> Path:
        return self.status / f"inputs-{rank}.json"

    @property
    def capture(self) -> Path:
        return self.root / "capture"

    # --- plan ----------------------------------------------------------------------
    def write_plan(self, plan: dict) -> None:
        self.plan.write_text(json.dumps(plan, indent=2))

    def read_plan(self) -> dict:
        return json.loads(self.plan.read_text())

    # --- what rank 0 leaves for the harness ---------------------------------------
    def write_network(self, record: dict) -> None:
        _write_atomic(self.network_file, record)

    def read_network(self) -> dict:
        return json.loads(self.network_file.read_text())

    def write_stand_ins(self, names: list[str]) -> None:
        _write_atomic(self.stand_ins_file, names)

    def read_stand_ins(self) -> list[str]:
        return json.loads(self.stand_ins_file.read_text())

    def listening_file(self, rank: int) -> Path:
        return self.status / f"listening-{rank}"

    def mark_listening(self, rank: int) -> None:
        self.listening_file(rank).touch()

    def not_listening(self, world_size: int) -> list[int]:
        """Ranks whose engine has not yet received a broadcast of its model-parallel group."""
        return [rank for rank in range(world_size) if not self.listening_file(rank).is_file()]

    def write_served_by(self, served_by: dict[str, int]) -> None:
        _write_atomic(self.served_by_file, served_by)

    def read_served_by(self) -> dict[str, int] | None:
        """{request id: data-parallel rank of the engine that served it}, or None (not written)."""
        return json.loads(self.served_by_file.read_text()) if self.served_by_file.is_file() else None

    def read_coordinator_schedule(self) -> dict | None:
        """What megatron-core's coordinator wrote (0.17+), or None."""
        try:
            return json.loads(self.coordinator_schedule_file.read_text())
        except (OSError, ValueError):
            return None

    def write_inputs(self, rank: int, record: dict) -> None:
        _write_atomic(self.inputs_file(rank), record)

    def read_inputs(self, world_size: int) -> list[dict]:
        """Every rank's inputs record (a rank that wrote none is left out)."""
        found = []
        for rank in range(world_size):
            try:
                found.append(json.loads(self.inputs_file(rank).read_text()))
            except (OSError, ValueError):
                continue
        return found

    def write_result(self, results: dict) -> None:
        _write_atomic(self.result, results)

    def missing_outputs(self) -> list[Path]:
        """What rank 0 must have written by the end of a successful run."""
        return [path for path in (self.result, self.network_file, self.stand_ins_file) if not path.is_file()]

    def mark_failed(self, message: str) -> None:
        self.failed.write_text(message.rstrip("\n") + "\n")

    # --- the zygote ------------------------------------------------------------------
    def write_zygote(self, record: dict) -> None:
        """The zygote's pid and start-up seconds, written before it forks the ranks."""
        _write_atomic(self.zygote_file, {**record, "rank_exits": {}})

    def write_rank_exits(self, exits: dict[int, str]) -> None:
        """How each rank that ended did ('exited with code 0', 'killed by SIGKILL'), before it is reaped."""
        record = self.read_zygote()
        record["rank_exits"] = {str(rank): how for rank, how in sorted(exits.items())}
        _write_atomic(self.zygote_file, record)

    def read_zygote(self) -> dict:
        try:
            return json.loads(self.zygote_file.read_text())
        except (OSError, ValueError):
            return {"rank_exits": {}}

    def rank_exit(self, rank: int) -> str | None:
        return self.read_zygote().get("rank_exits", {}).get(str(rank))

    # --- phases ----------------------------------------------------------------------
    def rank_status(self, rank: int) -> dict:
        """{"phase", "pid", "timings_s"} of one rank; one that has not reported yet is in 'init'."""
        try:
            status = json.loads(self.rank_status_file(rank).read_text())
            return {"phase": str(status["phase"]), "pid": status.get("pid"), "timings_s": status.get("timings_s", {})}
        except (OSError, ValueError, KeyError, TypeError):
            return {"phase": "init", "pid": None, "timings_s": {}}

    def rank_phases(self, world_size: int) -> dict[int, str]:
        return {rank: self.rank_status(rank)["phase"] for rank in range(world_size)}

    def memory(self, world_size: int) -> dict:
        """Peak resident memory (MiB) each rank reported when it finished, and rank 0's reading of the coordinator's."""
        statuses = []
        for rank in range(world_size):
            try:
                statuses.append(json.loads(self.rank_status_file(rank).read_text()))
            except (OSError, ValueError):
                statuses.append({})
        return {
            "peak_rss_mib_per_rank": [status.get("peak_rss_mib") for status in statuses],
            "coordinator_peak_rss_mib": statuses[0].get("coordinator_peak_rss_mib") if statuses else None,
        }


class PhaseRecorder:
    """A rank's side of ``status/rank-N.json``: its phase, its pid and the time spent per phase."""

    def __init__(self, run: RunDir, rank: int):
        self.path = run.rank_status_file(rank)
        self.timings: dict[str, float] = {}
        self._phase: str | None = None
        self._started = time.perf_counter()
        self.extra: dict = {}  # reported with the final status (peak memory)

    def enter(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        now = time.perf_counter()
        if self._phase is not None:
            self.timings[self._phase] = now - self._started
        self._phase, self._started = phase, now
        _write_atomic(self.path, {"phase": phase, "pid": os.getpid(), "timings_s": self.timings, **self.extra})

    def finish(self, **extra) -> None:
        self.extra.update(extra)
        self.enter("done")
