"""Which commits of a git source move which suite: the flow behind `logitsmatch watch`.

The tasks read the range (first-parent commits of A..B in the source) and the suites, say the plan (checkpoints and
the bound; ``--plan`` stops there), then walk it under the watch folder's lock (``explain.watch``) with every run
saved in the folder's store, and write ``watch.json``, ``watch.md`` and ``timeline.png`` into it. Each run installs
the commit's tree over the toolchain's venv as explain does (``gitsource.install_commit``) and runs ``logitsmatch
run`` there, here one after another (``--executor local``) or as jobs of the fan-out's Slurm executor.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, EXIT_RUN_FAILED, BadInput
from logitsmatch.files import atomic_writer, check_interpreter, folder_lock, output_folder, write_atomic
from logitsmatch.flows import execute
from logitsmatch.log import logger

MODELS = ("583m", "16B")  # the full-size models of the family, each with a tiny sibling


def tiny_siblings(suites: list[str], known: list[str]) -> list[str]:
    """Each suite's tiny sibling (``..._583m_...`` -> ``..._tiny_...``), once, in order; a tiny suite is its own."""
    siblings = []
    for suite in suites:
        sibling = next((suite.replace(f"_{m}_", "_tiny_") for m in MODELS if f"_{m}_" in suite), suite)
        if sibling in known and "_tiny_" in sibling and sibling not in siblings:
            siblings.append(sibling)
    return siblings


def toolchain_python(project: Path, toolchain: str | None, python: str | None) -> tuple[str, str]:
    """The toolchain (default: the default toolchain) and the interpreter of its venv (unless one is named)."""
    from logitsmatch.toolchains import check_toolchain, default_toolchain_name, load_toolchains, toolchain_venv

    pyproject = project / "pyproject.toml"
    name = check_toolchain(toolchain, load_toolchains(pyproject)) if toolchain else default_toolchain_name(pyproject)
    return name, python or str(toolchain_venv(project, name) / "bin" / "python")


@dataclass
class Plan:
    project: Path
    source: object  # explain.watch.Source
    suites: list[str]
    toolchain: str
    python: str
    out: Path
    cache: Path
    findings: list


def plan(_, args) -> Plan | int:
    """The range, the suites, the interpreter; with ``--plan`` the checkpoints and the bound, and nothing run."""
    from logitsmatch.explain import gitsource, upstream
    from logitsmatch.explain.watch import Source, checkpoints
    from logitsmatch.suites import suite_names
    from logitsmatch.toolchains import default_suite_names

    project = paths.project_root()
    package, equals, gitdir = args.source.partition("=")
    if not equals or package.strip().lower() != "megatron-core":
        raise BadInput(f"--source must be megatron-core=GITDIR, got {args.source!r}")
    start, dots, end = args.range.partition("..")
    if not dots or not start or not end:
        raise BadInput(f"--range must be A..B, got {args.range!r}")
    if args.every < 1:
        raise BadInput(f"--every must be at least 1, got {args.every}")
    commits = gitsource.commits_between(gitdir, start, end)
    known = suite_names(project)
    suites = args.suites or tiny_siblings(default_suite_names(project / "pyproject.toml", known), known)
    for suite in suites:
        if suite not in known:
            raise BadInput(f"unknown suite {suite!r} (known: {', '.join(known)})")
    toolchain, python = toolchain_python(project, args.toolchain, args.python)
    findings = [] if args.no_findings else upstream.load_register(project)
    source = Source("megatron-core", gitdir, args.range, commits)
    sampled = checkpoints(len(commits), args.every)
    per_change = math.ceil(math.log2(args.every)) if args.every > 1 else 0
    print(f"{len(commits) - 1} first-parent commits after {commits[0].short} up to {commits[-1].short}; "
          f"every {args.every}: {len(sampled)} checkpoints per suite ({len(suites)} suites), at most {per_change} "
          f"runs per change (bound per suite: {len(sampled)} + k*{per_change}); {len(findings)} finding check(s), "
          f"{sum(f.runs_per_check for f in findings) * len(sampled)} runs at the checkpoints")
    if args.plan:
        for i in sampled:
            print(f"  checkpoint {i:>4} {commits[i].short} {commits[i].subject}")
        return EXIT_OK
    check_interpreter(python, "--python")
    out = output_folder(args.out)
    return Plan(project, source, suites, toolchain, python, out, paths.cache_root() / "explain", findings)


class SuiteRunner:
    """Runs watch jobs: the job's tree installed over the toolchain's venv, then ``logitsmatch run`` there."""

    def __init__(self, plan: Plan, executor: str, timeout_s: float | None, slurm: dict[str, str]):
        from logitsmatch.explain.commit_search import megatron_cpp_helper
        from logitsmatch.explain.environments import Side, resolve

        self.plan, self.executor, self.timeout_s, self.slurm = plan, executor, timeout_s, slurm
        self.base = Side("base", plan.python)
        self.helper = megatron_cpp_helper(resolve(self.base))

    def prepare(self, job):
        """(side, run label) for ``job``, or the one line saying why its tree does not install."""
        from logitsmatch.explain import gitsource
        from logitsmatch.explain.environments import Side

        source = self.plan.source
        try:
            folder, _ = gitsource.install_commit(source.package, source.gitdir, job.tree.sha, self.plan.cache,
                                                 self.plan.python, self.helper, job.tree.take)
        except BadInput as exc:
            return str(exc)
        label = "watch-" + hashlib.sha256(f"{job.tree.name} {job.suite_key}".encode()).hexdigest()[:16]
        return Side(job.tree.name[:10], self.plan.python, (str(folder),)), label

    def __call__(self, jobs, results_root: Path):
        from logitsmatch.explain.suite_runs import published_run
        from logitsmatch.explain.watch_store import Outcome

        if self.executor == "slurm":
            yield from self.slurm_jobs(jobs, results_root)
            return
        for job in jobs:
            started = time.monotonic()
            prepared = self.prepare(job)
            if isinstance(prepared, str):
                yield Outcome(None, prepared, time.monotonic() - started)
                continue
            side, label = prepared
            logger.info(f"watch: {job.suite_key} at {job.tree.name[:24]}")
            result, error = published_run(self.plan.project, side, job.suite, self.plan.toolchain, label,
                                          results_root, job.options, self.timeout_s)
            yield Outcome(result, error, time.monotonic() - started)

    def slurm_jobs(self, jobs, results_root: Path):
        """Every job of the batch submitted at once through the fan-out's executor, outcomes in the jobs' order."""
        from logitsmatch.devtools import fanout
        from logitsmatch.explain.suite_runs import first_error_line, run_command
        from logitsmatch.explain.watch_store import Outcome
        from logitsmatch.suites import load_suite

        executor = fanout.Executor("slurm", results_root.parent / "slurm", self.slurm.get("partition"),
                                   {k: v for k, v in self.slurm.items() if k != "partition"}, self.plan.project)
        submitted = []
        for job in jobs:
            prepared = self.prepare(job)
            if isinstance(prepared, str):
                submitted.append((prepared, None, None))
                continue
            side, label = prepared
            command = run_command(side, job.suite, self.plan.toolchain, label, options=job.options,
                                  timeout_s=self.timeout_s)
            folder = results_root / job.suite
            suite = load_suite(self.plan.project, job.suite)
            env = side.env(extra_path=(str(self.plan.project / "tools"),))
            fanout_job = fanout.Job(label, self.plan.toolchain, job.suite, command,
                                    {"cpus_per_task": suite.world_size, "time": int(suite.timeout_s // 60) + 10},
                                    results_root, env={"PYTHONPATH": env["PYTHONPATH"],
                                                       "LOGITSMATCH_ROOT": str(self.plan.project)})
            executor.submit(fanout_job)
            submitted.append((fanout_job, folder, label))
        for fanout_job, folder, label in submitted:
            if isinstance(fanout_job, str):
                yield Outcome(None, fanout_job, 0.0)
                continue
            while not fanout_job.handle.done():
                time.sleep(fanout.POLL_S)
            fanout.settle(fanout_job)
            result = next(folder.glob(f"*/{label}/result.json"), None)
            wall = fanout_job.times.get("ended", 0.0) - fanout_job.times.get("started", 0.0)
            if fanout_job.state == fanout.DONE and result:
                yield Outcome(result, None, wall)
            else:
                log = Path(fanout_job.log())
                said = first_error_line(log.read_text(errors="replace")) if log.is_file() else fanout_job.detail
                yield Outcome(None, f"{fanout_job.detail}: {said}", wall)


def hardware_class(python: str, project: Path) -> str:
    """The class of this machine as a run in the toolchain's interpreter records it (torch's view: the store's key)."""
    code = "import torch; from logitsmatch.hardware import probe; print(probe()['class'])"
    completed = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONPATH": str(project / "tools")})
    if completed.returncode != 0:
        raise BadInput(f"{python}: cannot probe the hardware: {(completed.stderr.strip().splitlines() or ['?'])[-1]}")
    return completed.stdout.strip().splitlines()[-1]


def walk(plan: Plan, args) -> int:
    """The watch under the folder's lock; its report written whatever stopped it (a spent budget included)."""
    from logitsmatch.devtools.fanout import slurm_options
    from logitsmatch.explain.suite_runs import harness_digest
    from logitsmatch.explain.watch import Watch
    from logitsmatch.explain.watch_store import Store

    started = time.monotonic()
    try:
        slurm = slurm_options(args.slurm_option)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if args.partition:
        slurm["partition"] = args.partition
    if args.executor == "slurm" and importlib.util.find_spec("submitit") is None:
        raise BadInput(f"--executor slurm sends jobs through submitit, which {sys.executable} lacks: run the watch "
                       "from the fanout session's venv (.nox/fanout/bin/python -m logitsmatch watch --python "
                       "<the toolchain's python> ...) or install submitit there")
    hardware = hardware_class(plan.python, plan.project)
    with folder_lock(plan.out, "watching", wait=False):
        runner = SuiteRunner(plan, args.executor, args.timeout, slurm)
        store = Store(plan.out, plan.toolchain, hardware, harness_digest(plan.project), runner, args.budget)
        watch = Watch(plan.source, plan.suites, args.every, store, plan.findings)
        watch.walk()
        return publish(watch, plan.out, sys.argv[1:], plan.toolchain, hardware, time.monotonic() - started)


def publish(watch, out: Path, command: list[str], toolchain: str, hardware: str, wall_s: float) -> int:
    """watch.json, watch.md, timeline.png in ``out`` (atomically). Drift when a change was found; else, when a
    budget stopped the walk, run failed (3: nothing is established); else pass."""
    from logitsmatch.explain.watch_report import build, markdown
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.render.timeline import plot

    report = build(watch, command, toolchain, hardware, wall_s)
    out = output_folder(out)
    write_json_atomic(out / "watch.json", report)
    write_atomic(out / "watch.md", markdown(report))
    with atomic_writer(out / "timeline.png") as handle:
        plot(report, handle)
    print(f"{len(report['changes'])} change(s), {len(report['unrunnable'])} unrunnable commit(s), "
          f"{len(report['undecided'])} undecided; {report['new_runs']} runs made, "
          f"{len(report['runs']) - report['new_runs']} taken from the store; {out / 'watch.md'}"
          + (f"; {report['stopped']}" if report["stopped"] else ""))
    if report["changes"] or report["undecided"]:
        return EXIT_DRIFT
    return EXIT_RUN_FAILED if report["stopped"] else EXIT_OK


WORKFLOW = (plan, walk)


def watch(args) -> int:
    """Plan the watch, walk it, report."""
    return execute(WORKFLOW, args)
