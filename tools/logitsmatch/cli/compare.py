"""`logitsmatch compare GOLDEN CURRENT`: judge two golden-format files and report the drift.

Exit 0 when they match under the policy, 1 when tokens or numerics differ
beyond it, 2 for bad input (one line on stderr), an output path that is one of
the two inputs included. The policy options are
judge.policy's (add_policy_options), validated by Policy: a bad value is a
one-line BadInput too.
"""

from __future__ import annotations

import argparse
import sys

from logitsmatch.errors import EXIT_DRIFT, EXIT_OK
from logitsmatch.files import refuse_output_over_inputs
from logitsmatch.judge.compare import compare
from logitsmatch.judge.divergence import annotate
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.known_suite import recognise
from logitsmatch.judge.policy import add_policy_options, policy_over
from logitsmatch.judge.report import render_terminal, write_reports
from logitsmatch.judge.verdict import run_dtype, with_hardware
from logitsmatch.vocab import load_decoder

EXAMPLE = "logitsmatch compare golden_values_dev_dgx_h100.json result.json --json report.json --markdown report.md"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("golden", help="golden file (Megatron's golden_values_*.json format)")
    parser.add_argument("current", help="file of the run under test, same format")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the JSON report here")
    parser.add_argument("--markdown", dest="markdown_path", metavar="PATH", help="write a Markdown summary here")
    parser.add_argument("--junit", dest="junit_path", metavar="PATH", help="write JUnit XML here")
    parser.add_argument("--deepdiff", dest="deepdiff_path", metavar="PATH",
                        help="write the changes as DeepDiff's own result (values_changed, iterable_item_added, ...)")
    parser.add_argument("--suite", metavar="NAME",
                        help="judge under this suite's METRICS and comparison block (default: the suite the files' "
                             "provenance sidecars or paths name, else the default metrics)")
    add_policy_options(parser, suite_defaults=True)
    parser.add_argument("--tokenizer-model", metavar="PATH",
                        help="TikToken vocabulary (JSON) to decode the tokens at a divergence with, when the files "
                             "carry no generated_text (e.g. model_configs/tokenizer/logitsmatch-bpe-2048.vocab.json)")


def main(args: argparse.Namespace) -> int:
    known = recognise([args.golden, args.current], args.suite)
    policy = policy_over(known.policy, args)
    refuse_output_over_inputs([args.json_path, args.markdown_path, args.junit_path, args.deepdiff_path],
                              [args.golden, args.current])
    golden = load_golden(args.golden)
    current = load_golden(args.current)
    result = compare(golden, current, policy, run_dtype(args.golden, args.current))
    result.metrics_origin = known.origin if args.metrics is None else "named by --metrics"
    annotate(result, golden, current, load_decoder(args.tokenizer_model) if args.tokenizer_model else None)
    with_hardware(result, args.golden, args.current)
    write_reports(result, args.json_path, args.markdown_path, args.junit_path)
    if args.deepdiff_path:
        from logitsmatch.judge.deepdiff_view import write_deepdiff

        write_deepdiff(golden, current, result, args.deepdiff_path)
    sys.stdout.write(render_terminal(result))
    return EXIT_OK if result.passed else EXIT_DRIFT
