"""Why two environments drift (harness inputs, packages, commit, first moving module): the flow behind
`logitsmatch explain`.

The tasks check the suites, interpreters and git sources and build the two sides (a candidate
commit installed over the baseline where one is named), explain each suite (``explain.Explainer``),
then print and write the combined report; drift unless every suite is "no drift".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import check_interpreter, write_atomic
from logitsmatch.flows import execute
from logitsmatch.judge.policy import Policy
from logitsmatch.log import logger

TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"


@dataclass
class Sides:
    """The suites to explain and what every suite's explanation shares: the two sides and how they are judged."""

    project: Path
    suites: list[str]
    toolchain: str
    baseline: Any
    candidate: Any
    policy: Policy
    workdir: Path
    cache: Path
    sources: dict[str, str]
    candidate_commit: tuple[str, str, str] | None


def _pair(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise BadInput(f"{what} must be PACKAGE=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip().lower().replace("_", "-"), value


def build_sides(_, args) -> Sides:
    """The suites, the policy, the git sources and the two sides (the candidate's commit installed if named)."""
    from logitsmatch.explain import gitsource
    from logitsmatch.explain.commit_search import megatron_cpp_helper
    from logitsmatch.explain.environments import Side, resolve
    from logitsmatch.suites import suite_names
    from logitsmatch.toolchains import default_toolchain_name

    project = paths.project_root()
    known = suite_names(project)
    suites = args.suites or [TINY]
    for suite in suites:
        if suite not in known:
            raise BadInput(f"unknown suite {suite!r} (known: {', '.join(known)})")
    for option, python in (("--baseline-python", args.baseline_python), ("--candidate-python", args.candidate_python)):
        if python is not None:
            check_interpreter(python, option)
    policy = Policy.from_args(args)
    sources = dict(_pair(text, "--source") for text in args.source)
    for gitdir in sources.values():
        gitsource.git(gitdir, "rev-parse", "--git-dir")
    workdir = Path(args.workdir) if args.workdir else paths.results_root() / "explain"
    cache = paths.cache_root() / "explain"
    baseline = Side("baseline", args.baseline_python, tuple(str(Path(p).resolve()) for p in args.baseline_path))
    candidate_commit = None
    if args.candidate_commit:
        package, spec = _pair(args.candidate_commit, "--candidate-commit")
        if "@" not in spec:
            raise BadInput(f"--candidate-commit needs GITDIR@REF, got {spec!r}")
        gitdir, ref = spec.rsplit("@", 1)
        sha = gitsource.rev(gitdir, ref)
        helper = megatron_cpp_helper(resolve(baseline))
        folder, _ = gitsource.install_commit(package, gitdir, sha, cache, baseline.python, helper)
        candidate_commit = (package, gitdir, sha)
        sources.setdefault(package, gitdir)
    extra = tuple(str(Path(p).resolve()) for p in args.candidate_path)
    if candidate_commit:
        extra = (str(folder), *extra)
    if args.candidate_python and args.candidate_python != args.baseline_python:
        candidate = Side("candidate", args.candidate_python, extra)
    else:  # the baseline's interpreter and overlays, with the candidate's folders in front
        candidate = Side("candidate", args.baseline_python, (*extra, *baseline.pythonpath))
    toolchain = args.toolchain or default_toolchain_name(project / "pyproject.toml")
    return Sides(project, suites, toolchain, baseline, candidate, policy, workdir, cache, sources, candidate_commit)


def explain_suites(sides: Sides, args) -> dict:
    """Each suite explained in turn; the first suite's localization plotted with --png."""
    from logitsmatch.explain.explainer import Explainer
    from logitsmatch.explain.suite_runs import Settings

    suites = sides.suites
    reports = {}
    for suite in suites:
        logger.info(f"explaining {suite}")
        settings = Settings(sides.project, suite, sides.toolchain, sides.baseline, sides.candidate, sides.policy,
                            sides.workdir, sides.cache, sides.sources, sides.candidate_commit, args.timeout)
        explainer = Explainer(settings)
        reports[suite] = explainer.explain()
        if args.png and suite == suites[0] and explainer.last_localization is not None:
            from logitsmatch.render.localize import plot

            plot(explainer.last_localization, Path(args.png), f"{suite}: {reports[suite]['verdict']}")
    return reports


def publish(reports: dict, args) -> int:
    """The combined report on the terminal, as --json and --markdown; drift unless every suite is "no drift"."""
    from logitsmatch.explain.report import combine, markdown, terminal
    from logitsmatch.judge.golden_io import write_json_atomic

    combined = combine(reports, sys.argv[1:])
    print(terminal(combined))
    if args.json:
        write_json_atomic(Path(args.json), combined)
    if args.markdown:
        write_atomic(args.markdown, markdown(combined))
    return EXIT_OK if all(r["verdict"] == "no drift" for r in reports.values()) else EXIT_DRIFT


WORKFLOW = (build_sides, explain_suites, publish)


def explain(args) -> int:
    """Build the two sides, explain every suite, report."""
    return execute(WORKFLOW, args)
