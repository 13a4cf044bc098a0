"""`logitsmatch invariance SUITE`: the same weights and prompts at several parallel layouts, N x N.

Runs the suite once per layout (``logitsmatch run SUITE --layout L``; a fresh result is reused)
in this venv's toolchain, then compares every ordered pair of layouts exactly as `compare` and
`matrix` do: do the tokens agree (else the first divergence), the max |delta logprob|, how many
values are over the table's tolerance, and (MoE) whether every token went to the same experts.
Written as Markdown, JSON and a heatmap PNG, like the drift matrix (``logitsmatch.flows.invariance``).

The tolerance (``--abs-tol``, default ``judge.policy.INVARIANCE_ABS_TOL``) is not the suite's. On
one toolchain and one CPU the layouts run the same fp32 arithmetic in a different order: tensor
parallelism splits each GEMM's inner dimension and all-reduces the partial sums, which moves
logprobs by a few 1e-6 at the 583M shape; pipeline stages and data-parallel engines compute each
row as one rank would. The default leaves more than an order of magnitude above that reordering,
and is ten times tighter than Megatron's 1e-3 (set for bf16 on GPUs): a layout that shards,
routes, offsets or caches anything wrongly moves logprobs by 1e-2 or more, or changes tokens,
and cannot pass.
"""

from __future__ import annotations

from logitsmatch.flows.invariance import invariance
from logitsmatch.judge.policy import INVARIANCE_ABS_TOL, add_policy_options
from logitsmatch.run.plan import DENSE_LAYOUTS
from logitsmatch.run.platforms import add_platform_option
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = ("logitsmatch invariance gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq "
           "--toolchain py3.11-torch2.13.0-mcore0.16.1 --layouts tp8,pp8,tp2pp2dp2,dp8,tp1")


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    add_toolchain_option(parser, "toolchain name from pyproject.toml (must match this venv to run)", required=True)
    parser.add_argument("--layouts", metavar="LIST", default=None,
                        help=f"comma-separated layouts (default: those of {DENSE_LAYOUTS} the suite's model can take, "
                             "for a MoE suite its own layout and tp1; the others are named)")
    add_platform_option(parser, "profile to run on")
    parser.add_argument("--schedules", metavar="LIST", default=None,
                        help="comma-separated request schedules (together, alone, reversed, mixed, chunked, forward); "
                        "with --layouts the table is their product (default: the suite's together schedule only)")
    parser.add_argument("--batch-invariant", action="store_true",
                        help="run with megatron-core's batch_invariant_mode where release and platform have it")
    parser.add_argument("--candidate", default=None, metavar="NAME",
                        help="this venv is a candidate derived from --toolchain (nox -s invariance -- --megatron-core "
                        "SPEC): its runs and table are labelled NAME")
    add_policy_options(parser, ("abs_tol",), abs_tol=INVARIANCE_ABS_TOL)
    parser.add_argument("--rerun", action="store_true", help="run every layout again, even with a fresh result")
    parser.add_argument("--no-run", action="store_true", help="only tabulate fresh results; run nothing")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline per run in seconds (default: the suite's)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: results/invariance/<suite>/<toolchain>)")


def main(args) -> int:
    """The invariance flow (logitsmatch.flows.invariance): plan the cells, run, tabulate, publish, judge."""
    return invariance(args)
