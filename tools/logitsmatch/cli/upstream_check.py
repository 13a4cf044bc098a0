"""`logitsmatch upstream-check`: does an upstream finding (docs/upstream/) still hold at a release or a commit.

Runs the finding's executable check (``docs/upstream/upstream_findings.yaml``): the toolchain's venv as it is, or
with a megatron-core commit of a git checkout installed over it (--source, --ref).
Exit 0: the finding is absent there (fixed); 1: it holds; 2: bad input (an unknown finding, a bad ref);
3: a run of the check failed (no evidence either way).
"""

from __future__ import annotations

from logitsmatch.flows.upstream_check import upstream_check
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = ("logitsmatch upstream-check chunked-prefill-prompt-logprobs --source megatron-core=/src/Megatron-LM "
           "--ref d98e8a64dd")


def configure(parser) -> None:
    parser.add_argument("finding", help="the finding's id in docs/upstream/upstream_findings.yaml")
    add_toolchain_option(parser, "the toolchain whose venv runs the check (default: the default)", default=None)
    parser.add_argument("--python", metavar="PATH", default=None,
                        help="that venv's interpreter (default: .nox/toolchains/<toolchain>/bin/python)")
    parser.add_argument("--source", metavar="PACKAGE=GITDIR", default=None,
                        help="megatron-core=GITDIR, a Megatron-LM checkout: --ref is installed over the venv")
    parser.add_argument("--ref", metavar="REF", default=None, help="the commit or tag to check (with --source)")
    parser.add_argument("--workdir", metavar="DIR", default=None,
                        help="where the check's runs go (default: results/upstream/<finding>)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the status and its evidence as JSON")


def main(args) -> int:
    """The upstream-check flow (logitsmatch.flows.upstream_check)."""
    return upstream_check(args)
