"""`logitsmatch explain`: why two environments drift — harness inputs, packages, commit, module.

Each side is an interpreter (a venv's python) plus optional overlay folders in front of its
sys.path; ``nox -s explain`` builds the venvs of toolchains and candidates and calls this.
The judgement is bit-exact unless ``--mode`` says otherwise. Writes a terminal summary, and
``--json`` / ``--markdown`` reports (default: ``results/explain/<suite>/``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import check_interpreter, write_atomic
from logitsmatch.judge.policy import Mode, Policy, add_policy_options
from logitsmatch.log import logger

EXAMPLE = (
    "logitsmatch explain --baseline-python .nox/toolchains/A/bin/python "
    "--candidate-python .nox/toolchains/B/bin/python --source megatron-core=/src/Megatron-LM --json explain.json"
)
TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"


def configure(parser) -> None:
    parser.add_argument("suites", nargs="*", help=f"suites to explain (default: {TINY})")
    parser.add_argument("--baseline-python", metavar="PATH", required=True,
                        help="interpreter of the baseline environment")
    parser.add_argument("--baseline-path", metavar="DIR", action="append", default=[],
                        help="folder put first on the baseline's sys.path")
    parser.add_argument("--candidate-python", metavar="PATH", default=None,
                        help="interpreter of the candidate (default: the baseline's)")
    parser.add_argument("--candidate-path", metavar="DIR", action="append", default=[],
                        help="folder put first on the candidate's sys.path")
    parser.add_argument(
        "--candidate-commit",
        default=None,
        metavar="PACKAGE=GITDIR@REF",
        help="the candidate is the baseline with PACKAGE installed from that ref of a local git checkout",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PACKAGE=GITDIR",
        help="git checkout of PACKAGE with release tags (core_vX.Y.Z for megatron-core): bisect its commits",
    )
    parser.add_argument("--toolchain", metavar="NAME", default=None,
                        help="label for the runs (default: the default toolchain)")
    add_policy_options(parser, ("mode", "abs_tol", "rel_tol"), mode=Mode.DETERMINISTIC)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the explanation as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the explanation as Markdown")
    parser.add_argument("--png", default=None, metavar="PATH", help="plot of max |delta| per module (first suite)")
    parser.add_argument("--workdir", metavar="DIR", default=None,
                        help="runs of every environment (default: results/explain)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline of each suite run in seconds")


def _pair(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise BadInput(f"{what} must be PACKAGE=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip().lower().replace("_", "-"), value


def main(args) -> int:
    from logitsmatch.explain import gitsource
    from logitsmatch.explain.commit_search import megatron_cpp_helper
    from logitsmatch.explain.environments import Side, resolve
    from logitsmatch.explain.explainer import Explainer
    from logitsmatch.explain.report import combine, markdown, terminal
    from logitsmatch.explain.suite_runs import Settings
    from logitsmatch.judge.golden_io import write_json_atomic
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
    reports = {}
    for suite in suites:
        logger.info(f"explaining {suite}")
        settings = Settings(project, suite, toolchain, baseline, candidate, policy, workdir, cache,
                            sources, candidate_commit, args.timeout)
        explainer = Explainer(settings)
        reports[suite] = explainer.explain()
        if args.png and suite == suites[0] and explainer.last_localization is not None:
            from logitsmatch.render.localize import plot

            plot(explainer.last_localization, Path(args.png), f"{suite}: {reports[suite]['verdict']}")
    combined = combine(reports, sys.argv[1:])
    print(terminal(combined))
    if args.json:
        write_json_atomic(Path(args.json), combined)
    if args.markdown:
        write_atomic(args.markdown, markdown(combined))
    return EXIT_OK if all(r["verdict"] == "no drift" for r in reports.values()) else EXIT_DRIFT
