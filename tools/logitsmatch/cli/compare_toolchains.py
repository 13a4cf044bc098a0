"""`logitsmatch compare-toolchains A B`: which logprobs and tokens moved from A to B.

A and B are toolchain names (their latest results, else their goldens) or
paths to golden-format files. Each suite is judged under its own policy and
reported in full; the exit code is 1 if any suite differs beyond policy.
"""

from __future__ import annotations

from logitsmatch.flows.compare_toolchains import compare_toolchains
from logitsmatch.run.platforms import add_platform_option

EXAMPLE = "logitsmatch compare-toolchains py3.11-torch2.13.0-mcore0.15.3 py3.11-torch2.13.0-mcore0.16.1 --out reports/"


def configure(parser) -> None:
    parser.add_argument("a", help="baseline: toolchain name or golden-format file")
    parser.add_argument("b", help="other: toolchain name or golden-format file")
    parser.add_argument("--suite", action="append", metavar="NAME",
                        help="suite(s) to compare (default: every suite both have)")
    add_platform_option(parser, "of the outputs")
    parser.add_argument("--source", default="auto", metavar="{auto,results,goldens}",
                        help="where each output is read: auto (results, else goldens), results or goldens")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for report.json / report.md / report.junit.xml per suite")


def main(args) -> int:
    """The compare-toolchains flow (logitsmatch.flows.compare_toolchains)."""
    return compare_toolchains(args)
