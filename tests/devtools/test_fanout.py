"""`nox -s fanout`: its Slurm options, its job plan and its bad input (the runs on a real one-node Slurm
cluster and locally: tests/inference/test_fanout_slurm.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from logitsmatch.devtools import fanout
from support import DEFAULT_TOOLCHAIN, PROJECT, TINY_SUITE

SECOND_TOOLCHAIN = "py3.11-torch2.13.0-mcore0.16.0"  # same Python and torch as the default: a cheap second venv
TOOLCHAINS = (DEFAULT_TOOLCHAIN, SECOND_TOOLCHAIN)


def test_slurm_options_are_key_value():
    assert fanout.slurm_options(["cpus-per-task=2", "account=a=b"]) == {"cpus_per_task": "2", "account": "a=b"}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        fanout.slurm_options(["exclusive"])


def test_suite_jobs_follow_their_build_and_ask_for_their_ranks(tmp_path):
    from logitsmatch.devtools import nox_support
    from logitsmatch.suites import load_suite

    gpu = next(name for name, toolchain in nox_support.TOOLCHAINS.items() if toolchain.requires_gpu)
    jobs = fanout.plan_jobs([DEFAULT_TOOLCHAIN, gpu], [TINY_SUITE], PROJECT, tmp_path, "slurm")
    builds = {job.toolchain: job for job in jobs if job.suite is None}
    suite_jobs = [job for job in jobs if job.suite]
    assert set(builds) == {DEFAULT_TOOLCHAIN, gpu} and len(suite_jobs) == 2
    world_size = load_suite(PROJECT, TINY_SUITE).world_size
    for job in suite_jobs:
        assert job.build is builds[job.toolchain]
        assert job.results == tmp_path / "results"
        assert job.resources["cpus_per_task"] == world_size
        assert job.resources.get("gpus_per_node") == (world_size if job.toolchain == gpu else None)


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    cases = [
        (["--toolchain", "no-such-toolchain", "--executor", "local"], "unknown toolchain 'no-such-toolchain'"),
        (["--toolchain", DEFAULT_TOOLCHAIN, "no_such_suite", "--executor", "local"], "unknown suite 'no_such_suite'"),
        (["--toolchain", DEFAULT_TOOLCHAIN, "--executor", "slurm", "--slurm-option", "exclusive"], "not KEY=VALUE"),
        (["--toolchain", DEFAULT_TOOLCHAIN, "--executor", "local", "--results", str(tmp_path / "taken")],
         "is not empty"),
    ]
    for argv, fragment in cases:
        completed = subprocess.run([sys.executable, "-m", "logitsmatch.devtools.fanout", *argv], cwd=PROJECT,
                                   capture_output=True, text=True)
        lines = completed.stderr.strip().splitlines()
        assert completed.returncode == 2 and len(lines) == 1 and fragment in lines[0], completed.stderr


def test_a_stopped_fanout_cancels_its_jobs_and_names_them(tmp_path, monkeypatch, capsys):
    """SIGTERM (as CI stops a job) in the middle of the jobs: every job submitted and not ended is cancelled,
    named with its id, recorded as cancelled in jobs.json, and the fan-out exits 130."""
    import json
    import os
    import signal

    cancelled = []

    class Handle:
        def __init__(self, job_id):
            self.job_id = job_id
            self.paths = type("Paths", (), {"stderr": tmp_path / f"{job_id}.err"})()

        def done(self):
            return False

        def cancel(self, check=True):
            cancelled.append(self.job_id)

    class Executor:
        def __init__(self, *args):
            self.count = 0

        def submit(self, job):
            self.count += 1
            job.handle = Handle(f"J{self.count}")

    def submit_two_then_get_stopped(jobs, executor, progress):
        for job in jobs[:2]:
            executor.submit(job)
            job.state = fanout.RUNNING
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(fanout, "Executor", Executor)
    monkeypatch.setattr(fanout, "wait_local", submit_two_then_get_stopped)
    previous = signal.getsignal(signal.SIGTERM)
    code = fanout.main(["--toolchain", DEFAULT_TOOLCHAIN, TINY_SUITE, "--executor", "local",
                        "--results", str(tmp_path / "out")])
    assert code == 130 and cancelled == ["J1", "J2"]
    assert signal.getsignal(signal.SIGTERM) == previous
    assert "cancelled 2 job(s) not yet ended: job J1 (" in capsys.readouterr().err
    states = [job["state"] for job in json.loads((tmp_path / "out" / "jobs.json").read_text())["jobs"]][:2]
    assert states == [fanout.FAILED, fanout.FAILED]


def fake_slurm(folder, monkeypatch, **commands: str):
    """Executables named after Slurm's commands, first on PATH: each prints its text (a leading ``!`` makes it
    print the rest to stderr and exit 1) and appends its arguments to ``<name>.calls``."""
    import os

    folder.mkdir(exist_ok=True)
    for name, text in commands.items():
        failing = text.startswith("!")
        script = folder / name
        script.write_text("#!/bin/sh\n"
                          f'echo "$@" >> "{folder / name}.calls"\n'
                          f"cat <<'OUTPUT'{' >&2' if failing else ''}\n{text.lstrip('!')}\nOUTPUT\n"
                          f"exit {1 if failing else 0}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


NO_DATABASE = "sacct: error: Sending PersistInit msg: Connection refused\n" \
              "sacct: error: Problem talking to the database: Connection refused"


def test_without_accounting_it_says_so_once_and_reads_squeue(tmp_path, monkeypatch, capsys):
    """sacct fails (no slurmdbd): the executor says so in one line, with sacct's last error, and its jobs' states
    come from squeue, where a job squeue no longer lists has ended; sacct is asked once, not at every poll."""
    from logitsmatch.devtools import slurm_queue

    fake_slurm(tmp_path / "bin", monkeypatch, sacct="!" + NO_DATABASE)
    made = []
    monkeypatch.setattr(slurm_queue, "queue_executor", lambda folder: made.append(folder) or "squeue-executor")
    executor = fanout.Executor("slurm", tmp_path / "submitit", None, {}, PROJECT)
    assert executor.executor == "squeue-executor" and made == [tmp_path / "submitit" / "%j"]
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["[fanout] Slurm accounting is off (sacct: error: Problem talking to the database: Connection "
                     "refused): job states come from squeue and the jobs' result files"]
    assert len((tmp_path / "bin" / "sacct.calls").read_text().splitlines()) == 1

    states = slurm_queue.job_states("101|RUNNING|None|node1\n102|PENDING|Dependency|\n103|CANCELLED|None|\n",
                                    {"101", "102", "103", "104"})
    assert {job: entry["State"] for job, entry in states.items()} == \
        {"101": "RUNNING", "102": "PENDING", "103": "CANCELLED", "104": slurm_queue.ENDED}
    assert states["102"]["Reason"] == "Dependency"


def test_with_accounting_sacct_is_not_second_guessed(tmp_path, monkeypatch):
    from logitsmatch.devtools import slurm_queue

    fake_slurm(tmp_path / "bin", monkeypatch, sacct="")
    assert slurm_queue.accounting_problem() is None


def test_node_limits_are_the_partitions_largest_node(tmp_path, monkeypatch):
    from logitsmatch.devtools import slurm_queue

    fake_slurm(tmp_path / "bin", monkeypatch, sinfo="debug*|2|21694\ndebug*|4|8000\nbig|64|512000\n")
    assert slurm_queue.node_limits(None) == slurm_queue.NodeLimits("debug", 4, 21694)
    assert slurm_queue.node_limits("big") == slurm_queue.NodeLimits("big", 64, 512000)
    assert slurm_queue.node_limits("missing") is None
    limits = slurm_queue.node_limits(None)
    assert limits.fitting_options({"cpus_per_task": 8}) == ["--slurm-option cpus_per_task=4"]
    assert limits.fitting_options({"cpus_per_task": "4"}) == limits.fitting_options({"cpus_per_task": "all"}) == []


def test_a_job_too_big_for_every_node_is_bad_input_before_submitting(tmp_path, monkeypatch):
    """The default cpus_per_task (the world size, 8) on 2-CPU nodes: one line naming the job, the nodes and the
    option that fits, exit 2, nothing submitted."""
    import os

    fake_slurm(tmp_path / "bin", monkeypatch, sinfo="debug*|2|21694", sbatch="Submitted batch job 1")
    completed = subprocess.run([sys.executable, "-m", "logitsmatch.devtools.fanout", "--toolchain", DEFAULT_TOOLCHAIN,
                                TINY_SUITE, "--executor", "slurm", "--results", str(tmp_path / "out")],
                               cwd=PROJECT, capture_output=True, text=True, env=os.environ)
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stderr
    assert f"the job of suite {TINY_SUITE} on {DEFAULT_TOOLCHAIN} asks for 8 CPUs per task" in lines[0]
    assert "the nodes of partition debug have at most 2 CPUs" in lines[0]
    assert "Reason=PartitionConfig" in lines[0] and lines[0].endswith("try --slurm-option cpus_per_task=2")
    assert not (tmp_path / "bin" / "sbatch.calls").exists()


class PendingHandle:
    """A submitted job Slurm keeps PENDING (what wait_slurm reads of a submitit job)."""

    def __init__(self, job_id, folder, cancelled):
        self.job_id = job_id
        self.paths = type("Paths", (), {"stderr": folder / f"{job_id}.err"})()
        self.cancelled = cancelled
        self.watcher = type("Watcher", (), {"update": lambda self: None,
                                            "get_state": lambda self, job_id, mode: "PENDING"})()

    def done(self):
        return False

    def cancel(self, check=True):
        self.cancelled.append(self.job_id)


def test_a_job_slurm_never_starts_fails_the_fanout_at_the_first_poll(tmp_path, monkeypatch, capsys):
    """squeue says a submitted job waits for a reason no waiting resolves: the fan-out names the job and the reason,
    cancels every job not ended, records them in jobs.json and exits 2 (bad setup, not drift) without sleeping."""
    import json

    fake_slurm(tmp_path / "bin", monkeypatch, sinfo="debug*|8|21694",
               squeue="J1|RUNNING|None|node1\nJ2|PENDING|InvalidAccount|")
    cancelled = []

    class Executor:
        def __init__(self, kind, folder, partition, overrides, project):
            self.partition, self.overrides, self.count = partition, overrides, 0

        def submit(self, job):
            self.count += 1
            job.handle = PendingHandle(f"J{self.count}", tmp_path, cancelled)

    monkeypatch.setattr(fanout, "Executor", Executor)
    monkeypatch.setattr(fanout, "POLL_S", 3600.0)  # a second poll would hang the test
    code = fanout.main(["--toolchain", DEFAULT_TOOLCHAIN, TINY_SUITE, "--executor", "slurm",
                        "--results", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and cancelled == ["J1", "J2"]
    assert lines[-1] == (f"fanout: error: job J2 (suite {TINY_SUITE} on {DEFAULT_TOOLCHAIN}) can never start: Slurm "
                         "holds it PENDING with Reason=InvalidAccount (its account is invalid; the nodes of partition "
                         "debug have at most 8 CPUs and 21694 MB); cancelled 2 job(s) not yet ended")
    jobs = json.loads((tmp_path / "out" / "jobs.json").read_text())["jobs"]
    assert [job["detail"] for job in jobs] == ["cancelled: the fan-out cannot progress"] * 2


def test_a_pending_job_too_big_names_the_option_that_fits(tmp_path, monkeypatch):
    """Reason=PartitionConfig for a job asking 8 CPUs on 2-CPU nodes (an --slurm-option made it so): the
    option that fits is named; a reason that waiting resolves (Resources, Dependency) is no failure."""
    from logitsmatch.devtools import slurm_queue

    fake_slurm(tmp_path / "bin", monkeypatch,
               squeue="J1|PENDING|Resources|\nJ2|PENDING|Dependency|\nJ3|PENDING|PartitionConfig|")
    jobs = [fanout.Job(name, DEFAULT_TOOLCHAIN, TINY_SUITE, [], {"cpus_per_task": 1}) for name in ("a", "b", "c")]
    for number, job in enumerate(jobs, 1):
        job.handle = PendingHandle(f"J{number}", tmp_path, [])
    limits = slurm_queue.NodeLimits("debug", 2, 21694)
    fanout.check_pending(jobs[:2], {}, limits)
    with pytest.raises(fanout.NeverStarts, match=r"job J3 .* Reason=PartitionConfig \(it asks for more than the "
                       r"partition's nodes have; .*\): try --slurm-option cpus_per_task=2$"):
        fanout.check_pending(jobs, {"cpus_per_task": "8"}, limits)
    assert slurm_queue.never_starts("QOSMaxCpuPerJobLimit") and not slurm_queue.never_starts("Priority")
