"""`nox -s fanout`: jobs per (toolchain, suite) through submitit on a real one-node Slurm cluster and locally.

The Slurm test starts the cluster of tests/support/slurm_cluster.py (installing Debian's packages as root
where they are missing); it skips only where that cannot be done, and fails under CI. Two toolchains x the tiny
seed sibling run on Slurm and then locally, one job at a time (the 2-core host runs one 8-rank suite at once):
both merged matrices must agree, and every Slurm result must name its own Slurm job. A second test reads what the
fan-out reads of Slurm itself (squeue's pending reason, sinfo's CPUs, sacct without slurmdbd) in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import DEFAULT_TOOLCHAIN, PROJECT, TINY_SUITE, slurm_cluster

SECOND_TOOLCHAIN = "py3.11-torch2.13.0-mcore0.16.0"  # same Python and torch as the default: a cheap second venv
TOOLCHAINS = (DEFAULT_TOOLCHAIN, SECOND_TOOLCHAIN)


def run_fanout(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """The session as a user runs it: nox -s fanout -- ARGS, from the project root."""
    return subprocess.run([sys.executable, "-m", "nox", "-f", str(PROJECT / "noxfile.py"), "-s", "fanout", "--", *args],
                          cwd=PROJECT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def scratch():
    """A folder outside pytest's own temporary tree: another pytest session on the host may prune that tree while
    this test's jobs and cluster still use it."""
    with tempfile.TemporaryDirectory(prefix="logitsmatch-fanout-") as folder:
        yield Path(folder)


@pytest.fixture
def slurm(scratch) -> dict[str, str]:
    """A running one-node cluster (the client environment), stopped after the test."""
    cluster = slurm_cluster.Cluster(scratch / "cluster")
    try:
        env = cluster.start()
    except slurm_cluster.ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and Slurm cannot run here: {exc}", pytrace=False)
        pytest.skip(f"Slurm cannot run here: {exc}")
    yield env
    cluster.stop()


def collected_provenance(results: Path) -> dict[str, dict]:
    """Each collected result's provenance, by toolchain."""
    found = {}
    for sidecar in sorted((results / "collected").rglob("result.provenance.json")):
        record = json.loads(sidecar.read_text())
        found[record["toolchain"]] = record
    return found


def matrix_cells(results: Path) -> dict:
    report = json.loads((results / "matrix" / "matrix.json").read_text())
    return {suite: table["cells"] for suite, table in report["suites"].items()}


def test_slurm_fanout_matches_local(slurm, scratch):
    toolchains = [arg for name in TOOLCHAINS for arg in ("--toolchain", name)]
    one_at_a_time = f"cpus_per_task={os.cpu_count()}"  # each job takes the whole node
    on_slurm = run_fanout(*toolchains, TINY_SUITE, "--executor", "slurm", "--results", str(scratch / "slurm"),
                          "--slurm-option", one_at_a_time, env=slurm)
    assert on_slurm.returncode == 0, on_slurm.stdout[-3000:] + on_slurm.stderr[-3000:]
    assert "4 jobs: 0 queued, 0 running, 4 done, 0 failed" in on_slurm.stdout + on_slurm.stderr  # nox merges them
    jobs = json.loads((scratch / "slurm" / "jobs.json").read_text())["jobs"]
    suite_jobs = {job["toolchain"]: job for job in jobs if job["suite"]}
    builds = {job["toolchain"]: job for job in jobs if not job["suite"]}
    assert set(suite_jobs) == set(builds) == set(TOOLCHAINS)
    for name, job in suite_jobs.items():
        assert job["build_job_id"] == builds[name]["job_id"]  # started after its own build

    provenance = collected_provenance(scratch / "slurm")
    assert set(provenance) == set(TOOLCHAINS)
    executions = [record["execution"] for record in provenance.values()]
    assert all(execution["executor"] == "slurm" for execution in executions)
    assert len({execution["job_id"] for execution in executions}) == len(TOOLCHAINS)
    assert {name: record["execution"]["job_id"] for name, record in provenance.items()} == \
        {name: job["job_id"] for name, job in suite_jobs.items()}

    local = run_fanout(*toolchains, TINY_SUITE, "--executor", "local", "--results", str(scratch / "local"))
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    local_records = collected_provenance(scratch / "local").values()
    assert all(record["execution"]["executor"] == "local" for record in local_records)
    slurm_cells, local_cells = matrix_cells(scratch / "slurm"), matrix_cells(scratch / "local")
    assert set(slurm_cells) == {TINY_SUITE}
    assert set(slurm_cells[TINY_SUITE]) == set(TOOLCHAINS)
    assert slurm_cells == local_cells


def test_what_the_fanout_reads_from_a_real_slurm(slurm, scratch, monkeypatch):
    """squeue, sinfo and sacct as Slurm prints them (tests/devtools fakes them): a job asking for more CPUs than
    the node has waits with a reason that never resolves, the node's CPUs are read, and without slurmdbd sacct's
    failure is what the fan-out reports. Seconds, no suite run."""
    import signal
    import time

    from logitsmatch.devtools import slurm_queue

    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    cpus = os.cpu_count()
    assert slurm_queue.accounting_problem() is None
    assert slurm_queue.node_limits(None) == slurm_queue.NodeLimits(slurm_cluster.PARTITION, cpus,
                                                                   slurm_queue.node_limits(None).memory_mb)
    submitted = subprocess.run(["sbatch", "--parsable", f"--cpus-per-task={cpus + 1}", "-o", str(scratch / "big.out"),
                                "--wrap", "true"], capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + 60
        while (reason := slurm_queue.pending_reasons().get(job_id)) in (None, "None", "Priority", "Resources"):
            assert time.monotonic() < deadline, f"job {job_id} has no lasting reason after 60 s ({reason})"
            time.sleep(1)
        assert reason == "PartitionConfig" and slurm_queue.never_starts(reason)
    finally:
        subprocess.run(["scancel", job_id], check=False)

    dbd = scratch / "cluster" / "slurmdbd.pid"  # accounting off: the cluster's slurmdbd stopped
    os.kill(int(dbd.read_text().split()[0]), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (problem := slurm_queue.accounting_problem()) is None:
        assert time.monotonic() < deadline, "sacct still answers 30 s after slurmdbd was stopped"
        time.sleep(1)
    assert "database" in problem or "Connection refused" in problem, problem
