"""`nox -s fanout`: the toolchain x suite matrix as jobs on Slurm, or on this machine, through submitit.

    nox -s fanout -- [--tag TAG | --toolchain T ...] [SUITE ... | all] --executor slurm|local [--partition P]
                     [--results DIR] [--slurm-option KEY=VALUE ...]

Per toolchain one build job makes its venv (``.nox/toolchains/<toolchain>``, by the builder its nox session uses);
each (toolchain, suite) is one job that starts only after that build succeeded (Slurm: ``afterok``; local: the build
runs first), so no two jobs ever build one venv. A suite job is ``logitsmatch run SUITE --no-compare`` in the
toolchain's venv, publishing into one results tree (``DIR/results/<suite>/<platform>/<toolchain>/``, each job its
own triple). While the jobs run, one progress line counts them queued / running / done / failed; then every result
there is merged by ``logitsmatch collect`` into ``DIR/collected`` and tabulated by ``logitsmatch matrix --source
DIR/collected`` into ``DIR/matrix``. A failed or cancelled job is named with its job id and log; the others are
still collected. ``DIR/jobs.json`` keeps every job's id, state, log and times.

Resources: a job asks for one node and ``cpus_per_task`` = the suite's world size (its ranks); a toolchain that
requires a GPU asks for ``gpus_per_node`` = the world size too. ``--slurm-option`` overrides any of them
(``cpus_per_task=2``) or adds any other sbatch option (``account=A``, ``qos=Q``). Locally the jobs run one at a time.

When it cannot progress it says so (``devtools.slurm_queue``): a job that asks for more CPUs than the partition's
largest node has (``sinfo``) is bad input before anything is submitted, and one that Slurm keeps PENDING for a
reason no waiting resolves (Reason=PartitionConfig, an invalid account, ...) fails the fan-out at the next poll,
its reason and the ``--slurm-option`` that fits the nodes named, every job cancelled (exit 2, bad input). Without
accounting (no slurmdbd: ``sacct`` fails) it says so once and reads the jobs' states from ``squeue``.

This module runs in the fanout session's venv (the harness and submitit); submitit starts every job with that
venv's Python, so the folder ``DIR`` and the project must be on a filesystem the nodes share.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.devtools import slurm_queue
from logitsmatch.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, BadInput
from logitsmatch.toolchains import add_toolchain_option, check_toolchain

POLL_S = 5.0
BUILD_TIME_MIN = 60
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT"}


def build_job(toolchain_name: str) -> dict:
    """What a build job runs (on the node): the toolchain's venv, by the builder its nox session uses (a venv built
    from the same pins is taken as it is). Returns when it started and ended, as ``run_job`` does."""
    from logitsmatch.devtools import nox_support

    started = time.time()
    toolchain = nox_support.TOOLCHAINS[toolchain_name]
    nox_support.build_venv(toolchain.name, toolchain.python, toolchain.requirements())
    return {"started": started, "ended": time.time(), "host": socket.gethostname()}


def run_job(command: list[str], env: dict[str, str], cwd: str) -> dict:
    """What a job runs (on the node, in submitit's process): ``command``, its output in the job's log. Returns when
    it started and ended (for the overhead figures); a non-zero exit fails the job."""
    started = time.time()
    code = subprocess.run(command, cwd=cwd, env={**os.environ, **env}).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(command[-4:])} exited {code}")
    return {"started": started, "ended": time.time(), "host": socket.gethostname()}


@dataclass
class Job:
    """One build or suite job: what it runs, what it asks for, and what became of it."""

    name: str
    toolchain: str
    suite: str | None  # None: the toolchain's build job
    command: list[str]  # a suite job's; a build job runs build_job
    resources: dict
    results: Path | None = None
    build: Job | None = None
    handle: object = None  # the submitit job once submitted
    state: str = QUEUED
    detail: str = ""
    times: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # further environment of a suite job (a watch's overlay on PYTHONPATH)

    @property
    def job_id(self) -> str | None:
        return getattr(self.handle, "job_id", None)

    def log(self) -> str:
        return str(self.handle.paths.stderr) if self.handle is not None else "(not submitted)"

    @property
    def what(self) -> str:
        return f"suite {self.suite} on {self.toolchain}" if self.suite else f"build of {self.toolchain}"

    def describe(self) -> str:
        return f"job {self.job_id or '-'} ({self.what})"

    def record(self) -> dict:
        return {"name": self.name, "toolchain": self.toolchain, "suite": self.suite, "job_id": self.job_id,
                "state": self.state, "detail": self.detail, "log": self.log(), "results": str(self.results or ""),
                "build_job_id": self.build.job_id if self.build else None, "times": self.times}


def arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tag", help="the toolchains with this tag")
    add_toolchain_option(which, "a toolchain (repeatable)", action="append", metavar="TOOLCHAIN")
    parser.add_argument("suites", nargs="*", help="suites (default: the default suites; all: every suite)")
    parser.add_argument("--executor", required=True, choices=("slurm", "local"))
    parser.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    parser.add_argument("--results", type=Path, help="a new folder for jobs, logs, collected results and the matrix "
                        "(default: results/fanout/<UTC time>)")
    parser.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an sbatch option for every job, e.g. cpus_per_task=2, account=A (repeatable)")


def slurm_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--slurm-option {pair!r} is not KEY=VALUE")
        options[key.strip().lstrip("-").replace("-", "_")] = value
    return options


def plan_jobs(toolchains: list[str], suites: list[str], project: Path, results: Path, executor: str) -> list[Job]:
    """Build jobs first, then one suite job per (toolchain, suite) the toolchain's release can run."""
    from logitsmatch.devtools import nox_support
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import toolchain_venv

    jobs = []
    for toolchain in toolchains:
        gpus = nox_support.TOOLCHAINS[toolchain].requires_gpu
        logitsmatch = toolchain_venv(project, toolchain) / "bin" / "logitsmatch"
        build = Job(f"build-{toolchain}", toolchain, None, [], {"cpus_per_task": 1, "time": BUILD_TIME_MIN})
        jobs.append(build)
        for suite_name in suites:
            refusal = nox_support.release_refusal(toolchain, suite_name)
            if refusal:
                print(f"[fanout] {suite_name}: not run on {toolchain}: {refusal}", file=sys.stderr)
                continue
            suite = load_suite(project, suite_name)
            resources = {"cpus_per_task": suite.world_size, "time": int(suite.timeout_s // 60) + 10}
            if gpus:
                resources["gpus_per_node"] = suite.world_size
            jobs.append(Job(f"{suite_name}-{toolchain}", toolchain, suite_name,
                            [str(logitsmatch), "run", suite_name, "--toolchain", toolchain, "--no-compare"],
                            resources, results / "results", build))
    return jobs


class Executor:
    """submitit's executor of one kind with the fan-out's defaults; ``submit`` sends one job."""

    def __init__(self, kind: str, folder: Path, partition: str | None, overrides: dict[str, str], project: Path):
        self.kind = kind
        self.project = project
        self.partition = partition
        self.overrides = overrides
        if kind == "slurm":
            no_accounting = slurm_queue.accounting_problem()
            if no_accounting:
                print(f"[fanout] Slurm accounting is off ({no_accounting}): job states come from squeue and the "
                      "jobs' result files", file=sys.stderr)
                self.executor = slurm_queue.queue_executor(folder / "%j")
            else:
                from submitit import SlurmExecutor
                self.executor = SlurmExecutor(folder=folder / "%j")
            self.base = {"partition": partition} if partition else {}
        else:
            from submitit import LocalExecutor
            self.executor = LocalExecutor(folder=folder / "%j")
            self.base = {}

    def submit(self, job: Job) -> None:
        from logitsmatch.devtools.nox_support import activated
        if self.kind == "slurm":
            parameters = {**self.base, "job_name": f"lm-{job.name}"[:64], "nodes": 1, "ntasks_per_node": 1,
                          **job.resources}
            additional = {}
            if job.build is not None:  # a failed build cancels its suite jobs instead of leaving them pending
                additional = {"dependency": f"afterok:{job.build.job_id}", "kill_on_invalid_dep": "yes"}
            # the overrides last: sbatch's options keyed as submitit keys its own, so that one replaces the other
            self.executor.update_parameters(**parameters, additional_parameters={**additional, **self.overrides})
        else:
            self.executor.update_parameters(timeout_min=job.resources["time"],
                                            gpus_per_node=job.resources.get("gpus_per_node", 0))
        job.times["submitted"] = time.time()
        if job.suite is None:
            job.handle = self.executor.submit(build_job, job.toolchain)
        else:
            env = {**activated(Path(job.command[0]).parent), "LOGITSMATCH_RESULTS": str(job.results), **job.env}
            job.handle = self.executor.submit(run_job, job.command, env, str(self.project))


class NeverStarts(Exception):
    """A job Slurm will never start: the fan-out cannot progress (bad input or setup, not drift)."""


def unschedulable(jobs: list[Job], overrides: dict[str, str], limits: slurm_queue.NodeLimits | None) -> str | None:
    """Before submitting: the first job that asks for more CPUs than the partition's largest node has."""
    for job in jobs if limits is not None else ():
        resources = {**job.resources, **overrides}
        advice = limits.fitting_options(resources)
        if advice:
            return (f"the job of {job.what} asks for {resources['cpus_per_task']} CPUs per task, but "
                    f"{limits.describe()}, so Slurm would hold it PENDING (Reason=PartitionConfig) for ever: "
                    f"try {' '.join(advice)}")
    return None


def check_pending(jobs: list[Job], overrides: dict[str, str], limits: slurm_queue.NodeLimits | None) -> None:
    """Raise NeverStarts naming the first queued job Slurm holds PENDING for a reason no waiting resolves."""
    queued = {job.job_id: job for job in jobs if job.state == QUEUED and job.job_id}
    for job_id, reason in slurm_queue.pending_reasons().items():
        why = slurm_queue.never_starts(reason)
        if job_id not in queued or why is None:
            continue
        job = queued[job_id]
        advice = limits.fitting_options({**job.resources, **overrides}) if limits is not None else []
        raise NeverStarts(f"{job.describe()} can never start: Slurm holds it PENDING with Reason={reason} ({why}"
                          + (f"; {limits.describe()}" if limits is not None else "") + ")"
                          + (f": try {' '.join(advice)}" if advice else ""))


def slurm_state(job: Job) -> str:
    return job.handle.watcher.get_state(job.job_id, mode="cache").split()[0].upper()


def settle(job: Job) -> None:
    """Classify a finished job: done with its times, or failed with why (the command's exit, or no result at all:
    cancelled, timed out, killed; the caller adds the scheduler's state)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        outcome = job.handle.result()
    except FailedJobError as exc:  # the job's own error, with its traceback
        job.state = FAILED
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        job.detail = next((line for line in reversed(lines) if " exited " in line), lines[-1] if lines else "failed")
    except UncompletedJobError:  # FailedJobError's parent: no result at all
        job.state, job.detail = FAILED, "no result"
    else:
        job.state = DONE
        job.times.update(started=outcome["started"], ended=outcome["ended"], seen=time.time(), host=outcome["host"])
    if job.state == FAILED and job.build is not None and job.build.state == FAILED:
        job.detail += f" (its build job {job.build.job_id} did not succeed)"


class Progress:
    """One line, rewritten in place on a terminal, printed when the counts change otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.last = ""
        self.start = time.monotonic()

    def show(self, jobs: list[Job], final: bool = False) -> None:
        counts = {state: sum(job.state == state for job in jobs) for state in (QUEUED, RUNNING, DONE, FAILED)}
        line = f"[fanout] {len(jobs)} jobs: " + ", ".join(f"{n} {state}" for state, n in counts.items())
        if self.stream.isatty():
            self.stream.write(f"\r{line} ({time.monotonic() - self.start:.0f} s)" + ("\n" if final else ""))
        elif line != self.last:
            self.stream.write(f"{line} ({time.monotonic() - self.start:.0f} s)\n")
        self.stream.flush()
        self.last = line


def wait_slurm(jobs: list[Job], executor: Executor, progress: Progress) -> None:
    """Submit everything at once (suite jobs depend on their build), then poll sacct (or squeue) until all have
    ended; a job Slurm will never start raises NeverStarts at the poll that sees it."""
    limits = slurm_queue.node_limits(executor.partition)
    for job in jobs:
        executor.submit(job)
    while True:
        watcher = jobs[0].handle.watcher
        watcher.update()  # one sacct (or squeue) call for every job
        for job in jobs:
            if job.state in (DONE, FAILED):
                continue
            state = slurm_state(job)
            if job.handle.done():
                settle(job)
                if job.state == FAILED and state not in ("UNKNOWN", "COMPLETED"):
                    job.detail = f"{state}, {job.detail}"
            else:
                job.state = RUNNING if state in _SLURM_RUNNING else QUEUED
        progress.show(jobs)
        check_pending(jobs, executor.overrides, limits)
        if all(job.state in (DONE, FAILED) for job in jobs):
            return
        time.sleep(POLL_S)


def wait_local(jobs: list[Job], executor: Executor, progress: Progress) -> None:
    """One job at a time on this machine, each build before its suites; a suite whose build failed is not run."""
    for job in jobs:
        if job.build is not None and job.build.state == FAILED:
            job.state, job.detail = FAILED, f"not run (its build job {job.build.job_id} did not succeed)"
            continue
        executor.submit(job)
        job.state = RUNNING
        progress.show(jobs)
        while not job.handle.done():
            time.sleep(1.0)
        settle(job)
        progress.show(jobs)


def run_logitsmatch(*arguments: str) -> int:
    return subprocess.run([sys.executable, "-m", "logitsmatch", *arguments]).returncode


def collect_into(sources: list[Path], into: Path) -> int:
    """Merge the jobs' result trees into one (``logitsmatch collect``, which checks and keys each result)."""
    return run_logitsmatch("collect", *map(str, sources), "--into", str(into))


def _stop_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from logitsmatch.devtools import nox_support
    from logitsmatch.toolchains import default_toolchain_name

    parser = argparse.ArgumentParser(prog="nox -s fanout --", description=__doc__.splitlines()[0])
    arguments(parser)
    args = parser.parse_args(argv)
    project = nox_support.PROJECT

    def bad(message: str) -> int:
        print(f"fanout: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    known = nox_support.TOOLCHAINS
    if args.toolchain:
        try:
            toolchains = [check_toolchain(name, known) for name in args.toolchain]
        except BadInput as exc:
            return bad(str(exc))
    else:
        toolchains = [name for name, toolchain in known.items() if not args.tag or args.tag in toolchain.tags]
        if args.executor == "local":  # a cluster has GPU nodes; this machine may not
            runnable = set(nox_support.runnable_toolchains())
            toolchains = [name for name in toolchains if name in runnable]
        if not toolchains:
            return bad(f"no toolchain has the tag {args.tag!r}" if args.tag else "no toolchain to run")
    unknown_suites = [name for name in args.suites if name not in nox_support.SUITES and args.suites != ["all"]]
    if unknown_suites:
        return bad(f"unknown suite {unknown_suites[0]!r} (known: {', '.join(nox_support.SUITES)})")
    suites = nox_support.SUITES if args.suites == ["all"] else args.suites or nox_support.DEFAULT_SUITES
    try:
        overrides = slurm_options(args.slurm_option)
    except ValueError as exc:
        return bad(str(exc))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = (args.results or project / "results" / "fanout" / stamp).resolve()
    if results.exists() and any(results.iterdir()):
        return bad(f"{results} is not empty: name a new folder with --results")
    results.mkdir(parents=True, exist_ok=True)

    jobs = plan_jobs(toolchains, suites, project, results, args.executor)
    if args.executor == "slurm":
        too_big = unschedulable(jobs, overrides, slurm_queue.node_limits(args.partition))
        if too_big:
            return bad(too_big)
    executor = Executor(args.executor, results / "submitit", args.partition, overrides, project)
    progress = Progress()
    started = time.time()
    previous_sigterm = signal.signal(signal.SIGTERM, _stop_as_ctrl_c)  # CI stops a job with SIGTERM
    try:
        (wait_slurm if args.executor == "slurm" else wait_local)(jobs, executor, progress)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal does not stop the cancelling
        cancelled = cancel_unended(jobs, "fanout interrupted")
        print(f"fanout: interrupted; cancelled {len(cancelled)} job(s) not yet ended"
              + (f": {', '.join(cancelled)}" if cancelled else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except NeverStarts as exc:
        cancelled = cancel_unended(jobs, "the fan-out cannot progress")
        return bad(f"{exc}; cancelled {len(cancelled)} job(s) not yet ended")
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        write_jobs(results, jobs, started)
    progress.show(jobs, final=True)

    for job in jobs:
        if job.state == FAILED:
            print(f"[fanout] {job.describe()} {job.detail or 'failed'}; log: {job.log()}", file=sys.stderr)
    if not any(job.suite and job.state == DONE for job in jobs):
        print("fanout: no job produced a result", file=sys.stderr)
        return EXIT_RUN_FAILED
    if collect_into([results / "results"], results / "collected") != EXIT_OK:
        return EXIT_RUN_FAILED
    ran = [name for name in toolchains if any(job.toolchain == name and job.suite for job in jobs)]
    default = default_toolchain_name(project / "pyproject.toml")
    baseline = default if default in ran else ran[0]
    verdict = run_logitsmatch("matrix", "--source", str(results / "collected"), "--out", str(results / "matrix"),
                              "--baseline", baseline, *(f"--toolchain={name}" for name in ran),
                              *(f"--suite={suite}" for suite in dict.fromkeys(job.suite for job in jobs if job.suite)))
    failed = [job for job in jobs if job.state == FAILED]
    print(f"[fanout] {len(jobs) - len(failed)} of {len(jobs)} jobs done in {time.time() - started:.0f} s; "
          f"matrix: {results / 'matrix' / 'matrix.md'}", file=sys.stderr)
    return EXIT_RUN_FAILED if failed else verdict


def cancel_unended(jobs: list[Job], why: str) -> list[str]:
    """Cancel every submitted job that has not ended, recording ``why``; their descriptions."""
    cancelled = []
    for job in jobs:
        if job.handle is not None and job.state not in (DONE, FAILED):
            job.handle.cancel(check=False)
            job.state, job.detail = FAILED, f"cancelled: {why}"
            cancelled.append(job.describe())
    return cancelled


def write_jobs(results: Path, jobs: list[Job], started: float) -> None:
    """DIR/jobs.json, written whole or not at all."""
    target = results / "jobs.json"
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_text(json.dumps({"started": started, "ended": time.time(), "jobs": [job.record() for job in jobs]},
                                  indent=1) + "\n")
    os.replace(partial, target)


if __name__ == "__main__":
    sys.exit(main())
