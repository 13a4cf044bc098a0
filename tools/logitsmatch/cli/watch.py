"""`logitsmatch watch`: which commits of megatron-core move which suite, each change proven, findings followed.

Walks the first-parent commits of A..B in a git source, runs the suites every N commits (each commit's tree over
the toolchain's venv, as explain does), bisects each difference to its first commit and proves it (parent and
commit reproduce the two sides; the one file that alone moves it; the first moving module), and checks the
upstream findings at each checkpoint. Runs are saved in OUT's store: a second watch runs nothing, an extended range
only its new commits, a killed one resumes. Writes OUT/watch.json, watch.md, timeline.png.
Exit 0: no suite moved in the range; 1: a change (or an undecided one) was found; 2: bad input;
3: the budget stopped the walk before it found a change (nothing is established; the next watch resumes).
"""

from __future__ import annotations

from logitsmatch.flows.watch import watch
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = ("logitsmatch watch --source megatron-core=/src/Megatron-LM --range core_v0.17.1..core_v0.18.0 "
           "--every 16 --out results/watch/0.18")


def configure(parser) -> None:
    parser.add_argument("suites", nargs="*",
                        help="suites to watch (default: the tiny siblings of the default suites)")
    parser.add_argument("--source", required=True, metavar="PACKAGE=GITDIR",
                        help="megatron-core=GITDIR: the git checkout whose commits are watched")
    parser.add_argument("--range", required=True, metavar="RANGE",
                        help="A..B: the first-parent commits after A up to B (A itself is the first checkpoint)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the watch folder: its store of runs and the reports (reused by the next watch)")
    parser.add_argument("--every", type=int, default=16, metavar="N", help="run every N commits, then bisect")
    add_toolchain_option(parser, "the toolchain whose venv each commit is installed over (default: the default)",
                         default=None)
    parser.add_argument("--python", metavar="PATH", default=None,
                        help="that venv's interpreter (default: .nox/toolchains/<toolchain>/bin/python)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="where runs go: here one after another, or Slurm jobs (the fan-out's executor)")
    parser.add_argument("--partition", default=None, metavar="NAME", help="Slurm partition (--executor slurm)")
    parser.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an sbatch option for every job (repeatable)")
    parser.add_argument("--budget", type=int, default=None, metavar="RUNS",
                        help="make at most RUNS new runs, then stop cleanly and write what was found")
    parser.add_argument("--no-findings", action="store_true",
                        help="do not run the upstream findings' checks at the checkpoints")
    parser.add_argument("--plan", action="store_true",
                        help="print the checkpoints and the bound, run nothing")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline of each suite run in seconds")


def main(args) -> int:
    """The watch flow (logitsmatch.flows.watch): plan, walk, report."""
    return watch(args)
