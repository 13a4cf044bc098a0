"""`logitsmatch determinism SUITE --toolchain T`: run a suite twice and demand bit-identical results.

Each run is a full ``logitsmatch run`` (same options) publishing into its own
folder under ``results/<suite>/.determinism/<id>/run-N/``, so the suite's
published result and its goldens are untouched. The results are then judged
with the DETERMINISTIC policy of ``logitsmatch.judge.policy`` (tokens, logprobs and
generated text, bit-exact). Exit 0 when every run matches the first, 1 (and a
"NOT DETERMINISTIC" verdict naming what moved) when one does not, or the
failing run's own exit code.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

from logitsmatch import paths
from logitsmatch.cli import run as run_cli
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.log import logger

METRICS = ("generated_tokens", "logprobs", "generated_text")
EXAMPLE = (
    "logitsmatch determinism gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq "
    "--toolchain py3.11-torch2.13.0-mcore0.16.1"
)


def configure(parser: argparse.ArgumentParser) -> None:
    run_cli.configure(parser)
    parser.add_argument("--runs", type=int, default=2, metavar="N", help="how many runs to compare (default 2)")


def judge(results: list[Path], report_dir: Path) -> bool:
    """Every result against the first, bit-exact; prints the verdict, writes report-N.{json,md}."""
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.policy import Mode, Policy
    from logitsmatch.judge.report import render_terminal, write_reports

    policy = Policy(mode=Mode.DETERMINISTIC, metrics=METRICS)
    first = load_golden(results[0])
    identical = True
    for index, path in enumerate(results[1:], start=2):
        result = compare(first, load_golden(path), policy)
        write_reports(result, json_path=str(report_dir / f"report-{index}.json"),
                      markdown_path=str(report_dir / f"report-{index}.md"))
        if result.passed:
            logger.info(f"DETERMINISTIC: run {index} is bit-identical to run 1 ({', '.join(METRICS)})")
        else:
            identical = False
            logger.info(
                f"NOT DETERMINISTIC: run {index} differs from run 1 (report: {report_dir / f'report-{index}.md'})"
            )
            print(render_terminal(result))
    return identical


def main(args: argparse.Namespace) -> int:
    if args.runs < 2:
        raise BadInput(f"--runs must be at least 2, got {args.runs}")
    root = paths.results_root() / args.suite / ".determinism" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    results = []
    for index in range(1, args.runs + 1):
        logger.info(f"determinism: run {index} of {args.runs}")
        run_args = copy.copy(args)
        run_args.no_compare = True
        code = run_cli.main(run_args, results_root=root / f"run-{index}")
        if code != EXIT_OK:
            return code
        found = sorted((root / f"run-{index}").glob("*/*/*/result.json"))
        if len(found) != 1:
            raise BadInput(f"run {index} published {len(found)} results under {root / f'run-{index}'}")
        results.append(found[0])
    return EXIT_OK if judge(results, root) else EXIT_DRIFT
