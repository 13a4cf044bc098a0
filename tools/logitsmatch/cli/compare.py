"""`logitsmatch compare GOLDEN CURRENT`: judge two golden-format files and report the drift.

Exit 0 when they match under the policy, 1 when tokens or numerics differ
beyond it, 2 for bad input (one line on stderr), an output path that is one
of the two inputs included. Options are taken as text
and validated by Policy, so a bad value is a one-line BadInput too.
"""

from __future__ import annotations

import argparse
import sys

from logitsmatch.errors import EXIT_DRIFT, EXIT_OK
from logitsmatch.files import refuse_output_over_inputs
from logitsmatch.judge.compare import DEFAULT_METRICS, Mode, Policy, compare
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.report import render_terminal, write_reports

EXAMPLE = "logitsmatch compare golden_values_dev_dgx_h100.json result.json --json report.json --markdown report.md"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("golden", help="golden file (Megatron's golden_values_*.json format)")
    parser.add_argument("current", help="file of the run under test, same format")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the JSON report here")
    parser.add_argument("--markdown", dest="markdown_path", metavar="PATH", help="write a Markdown summary here")
    parser.add_argument("--junit", dest="junit_path", metavar="PATH", help="write JUnit XML here")
    parser.add_argument("--deepdiff", dest="deepdiff_path", metavar="PATH",
                        help="write the changes as DeepDiff's own result (values_changed, iterable_item_added, ...)")
    parser.add_argument("--mode", default=Mode.MEGATRON.value, metavar="MODE",
                        help="megatron (default: abs 1e-3, as Megatron-LM), deterministic (bit-exact), "
                             "approximate (abs/rel tolerance with a failure budget)")
    parser.add_argument("--abs-tol", metavar="X", help="absolute tolerance (default: the mode's)")
    parser.add_argument("--rel-tol", metavar="X", help="relative tolerance (default: the mode's)")
    parser.add_argument("--failure-budget", metavar="N",
                        help="out-of-tolerance logprobs allowed per request (default: the mode's)")
    parser.add_argument("--nan-equal", action=argparse.BooleanOptionalAction, default=True,
                        help="whether NaN matches NaN (default: yes)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                        help="comma-separated metrics to check (default: %(default)s)")
    parser.add_argument("--request-subset", action="store_true",
                        help="judge only the golden requests the current file has (default, as Megatron: "
                             "a golden request missing from current fails)")


def main(args: argparse.Namespace) -> int:
    policy = Policy(
        mode=Mode.parse(args.mode),
        abs_tol=args.abs_tol,
        rel_tol=args.rel_tol,
        failure_budget=args.failure_budget,
        nan_equal=args.nan_equal,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        request_subset=args.request_subset,
    )
    refuse_output_over_inputs([args.json_path, args.markdown_path, args.junit_path, args.deepdiff_path],
                              [args.golden, args.current])
    golden = load_golden(args.golden)
    current = load_golden(args.current)
    result = compare(golden, current, policy)
    write_reports(result, args.json_path, args.markdown_path, args.junit_path)
    if args.deepdiff_path:
        from logitsmatch.judge.deepdiff_view import write_deepdiff

        write_deepdiff(golden, current, result, args.deepdiff_path)
    sys.stdout.write(render_terminal(result))
    return EXIT_OK if result.passed else EXIT_DRIFT
