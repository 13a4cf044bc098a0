"""`logitsmatch explain`: why two environments drift — harness inputs, packages, commit, module.

Each side is an interpreter (a venv's python) plus optional overlay folders in front of its
sys.path; ``nox -s explain`` builds the venvs of toolchains and candidates and calls this.
The judgement is bit-exact unless ``--mode`` says otherwise. Writes a terminal summary, and
``--json`` / ``--markdown`` reports (default: ``results/explain/<suite>/``).
"""

from __future__ import annotations

from logitsmatch.flows.explain import TINY, explain
from logitsmatch.judge.policy import Mode, add_policy_options
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = (
    "logitsmatch explain --baseline-python .nox/toolchains/A/bin/python "
    "--candidate-python .nox/toolchains/B/bin/python --source megatron-core=/src/Megatron-LM --json explain.json"
)


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
    add_toolchain_option(parser, "label for the runs (default: the default toolchain)", default=None)
    add_policy_options(parser, ("mode", "abs_tol", "rel_tol"), mode=Mode.DETERMINISTIC)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the explanation as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the explanation as Markdown")
    parser.add_argument("--png", default=None, metavar="PATH", help="plot of max |delta| per module (first suite)")
    parser.add_argument("--workdir", metavar="DIR", default=None,
                        help="runs of every environment (default: results/explain)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline of each suite run in seconds")


def main(args) -> int:
    """The explain flow (logitsmatch.flows.explain): build the sides, explain each suite, report."""
    return explain(args)
