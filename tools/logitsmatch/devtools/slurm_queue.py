"""What the fan-out reads from Slurm itself, so that it can say why it cannot progress.

* Accounting: submitit reads job states with ``sacct``, which needs the accounting database (slurmdbd); many
  small clusters have none, and then every poll fails with a warning and a cancelled job is never seen to end.
  ``accounting_problem`` asks ``sacct`` once; without it the jobs' states come from ``squeue``
  (``queue_executor``), which lists a job while it waits or runs and, with its final state, for MinJobAge seconds
  (default 300) after it ended. A job it no longer lists has ended; whether it succeeded is in its result file,
  which submitit reads.
* Jobs that can never start: Slurm keeps a job that asks for more than the partition's nodes have PENDING for
  ever (Reason=PartitionConfig: 8 CPUs per task on 2-CPU nodes). ``never_starts`` names the reasons that no
  waiting resolves, and ``NodeLimits`` (from ``sinfo``) says what a job may ask for there.

Standard library and Slurm's commands; submitit only inside ``queue_executor`` (it is in the fanout venv only).
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENDED = "ENDED"  # the state of a job squeue no longer lists: it ended; its result file says how
# Reasons a PENDING job keeps until it is cancelled: what it asks for exceeds what the partition, the account or the
# QOS allows a job (Slurm's squeue(1) "JOB REASON CODES"); a per-job QOS/association limit is one too.
_NEVER = {
    "PartitionConfig": "it asks for more than the partition's nodes have",
    "PartitionTimeLimit": "its time limit exceeds the partition's",
    "BadConstraints": "its constraints cannot be satisfied",
    "InvalidAccount": "its account is invalid",
    "InvalidQOS": "its QOS is invalid",
}
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)Max\w*PerJob\w*")


def _run(command: list[str]) -> subprocess.CompletedProcess | None:
    """One Slurm command, its output as text; None where it is not installed."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None


def accounting_problem() -> str | None:
    """Why ``sacct`` cannot answer here (its last error line), or None where it can."""
    done = _run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now"])
    if done is None:
        return "sacct is not installed"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"sacct exited {done.returncode}"


def squeue_command() -> list[str]:
    """Every job of this user squeue knows, ended ones included: id, state, reason, nodes."""
    return ["squeue", "-h", "--states=all", "-u", getpass.getuser(), "-o", "%i|%T|%r|%N"]


def job_states(output: str, expected: set[str]) -> dict[str, dict[str, str]]:
    """squeue's lines as submitit keys sacct's (JobID, State, NodeList) plus Reason; each ``expected`` job it does
    not list is ENDED."""
    states = {}
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 4 and fields[0]:
            job_id, state, reason, nodes = fields
            states[job_id] = {"JobID": job_id, "State": state, "Reason": reason, "NodeList": nodes}
    for job_id in expected - set(states):
        states[job_id] = {"JobID": job_id, "State": ENDED, "Reason": "", "NodeList": ""}
    return states


def pending_reasons() -> dict[str, str]:
    """{job id: Slurm's reason} for this user's PENDING jobs; {} where squeue does not answer."""
    done = _run(squeue_command())
    if done is None or done.returncode != 0:
        return {}
    return {job_id: entry["Reason"] for job_id, entry in job_states(done.stdout, set()).items()
            if entry["State"] == "PENDING"}


def never_starts(reason: str) -> str | None:
    """What a PENDING reason says the job cannot get, where no waiting resolves it; None for any other reason."""
    if reason in _NEVER:
        return _NEVER[reason]
    if _PER_JOB_LIMIT.fullmatch(reason):
        return "it exceeds a per-job limit of its QOS or association"
    return None


@dataclass(frozen=True)
class NodeLimits:
    """The most one node of a partition offers (sinfo, node by node)."""

    partition: str
    cpus: int
    memory_mb: int

    def describe(self) -> str:
        return f"the nodes of partition {self.partition} have at most {self.cpus} CPUs and {self.memory_mb} MB"

    def fitting_options(self, resources: dict) -> list[str]:
        """The ``--slurm-option``s that bring a job's ``resources`` within one node (a value that is no number is
        sbatch's to refuse)."""
        cpus = str(resources.get("cpus_per_task", 1))
        return [f"--slurm-option cpus_per_task={self.cpus}"] if cpus.isdigit() and int(cpus) > self.cpus else []


def node_limits(partition: str | None) -> NodeLimits | None:
    """The largest node of ``partition`` (default: the cluster's default partition, sinfo's ``*``); None where sinfo
    does not answer or lists no such partition."""
    done = _run(["sinfo", "-h", "-N", "-o", "%P|%c|%m"])
    if done is None or done.returncode != 0:
        return None
    nodes = []
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        name, cpus, memory = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        if (partition is None and default) or name == partition:
            nodes.append((name, int(cpus), int(memory) if memory.isdigit() else 0))
    if not nodes:
        return None
    return NodeLimits(nodes[0][0], max(cpus for _, cpus, _ in nodes), max(memory for _, _, memory in nodes))


def queue_executor(folder: Path):
    """submitit's SlurmExecutor whose jobs read their states from squeue instead of sacct (no accounting here)."""
    from submitit.slurm import slurm

    class QueueWatcher(slurm.SlurmInfoWatcher):
        def _make_command(self) -> list[str] | None:
            return squeue_command() if self._registered - self._finished else None

        def read_info(self, string) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            return job_states(text, self._registered - self._finished)

    class QueueJob(slurm.SlurmJob):
        watcher = QueueWatcher(delay_s=60)

    class QueueExecutor(slurm.SlurmExecutor):
        job_class = QueueJob

    return QueueExecutor(folder=folder)
