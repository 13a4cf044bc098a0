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
