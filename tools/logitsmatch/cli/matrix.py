"""`logitsmatch matrix`: the N x N drift table of toolchains, per suite.

Row = golden side, column = current side, each cell exactly `compare`'s
verdict for that pair: do tokens agree (else the first divergence), max
|delta logprob| over comparable positions, and how many values are over the
suite's tolerance. Written as Markdown, JSON and a heatmap PNG.
"""

from __future__ import annotations

from logitsmatch.flows.matrix import matrix
from logitsmatch.run.platforms import add_platform_option
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = "logitsmatch matrix --baseline py3.11-torch2.13.0-mcore0.16.1 --out results/matrix"


def configure(parser) -> None:
    add_toolchain_option(parser, "a toolchain to include, repeatable (default: every toolchain, or those with a --tag)",
                         action="append")
    parser.add_argument("--tag", action="append", metavar="TAG",
                        help="include the toolchains with this tag (pyproject.toml), repeatable, as nox's --tag")
    parser.add_argument("--suite", metavar="NAME", action="append", help="suites to include (default: all)")
    parser.add_argument("--baseline", metavar="NAME", default=None,
                        help="toolchain the exit code is judged against, marked * (default: the default toolchain)")
    add_platform_option(parser, "of the outputs")
    parser.add_argument("--source", default="auto", metavar="{auto,results,goldens,DIR}",
                        help="auto (results, else goldens), results, goldens, or a tree made by `logitsmatch collect`")
    parser.add_argument("--hardware-class", metavar="CLASS", default=None,
                        help="with --source DIR: the hardware class to tabulate when the tree holds several")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: results/matrix)")


def main(args) -> int:
    """The matrix flow (logitsmatch.flows.matrix): select the toolchains, tabulate, publish, judge the baseline."""
    return matrix(args)
