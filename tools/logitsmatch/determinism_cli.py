"""`logitsmatch determinism SUITE --toolchain T`: run a suite twice and demand bit-identical results.

Each run is a full ``logitsmatch run`` (same options) publishing into its own
folder under ``results/<suite>/.determinism/<id>/run-N/``, so the suite's
published result and its goldens are untouched. The results are then judged
with the DETERMINISTIC policy of ``logitsmatch.compare`` (tokens, logprobs and
generated text, bit-exact). Exit 0 when every run matches the first, 1 (and a
"NOT DETERMINISTIC" verdict naming what moved) when one does not, or the
failing run's own exit code.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from contextlib import contextmanager
from pathlib import Path

from logitsmatch import paths, run_cli
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput

METRICS = ("generated_tokens", "logprobs", "generated_text")


def configure(parser: argparse.ArgumentParser) -> None:
    run_cli.configure(parser)
    parser.add_argument("--runs", type=int, default=2, metavar="N", help="how many runs to compare (default 2)")


@contextmanager
def _results_root(path: Path):
    previous = os.environ.get("LOGITSMATCH_RESULTS")
    os.environ["LOGITSMATCH_RESULTS"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LOGITSMATCH_RESULTS", None)
        else:
            os.environ["LOGITSMATCH_RESULTS"] = previous


def judge(results: list[Path], report_dir: Path) -> bool:
    """Every result against the first, bit-exact; prints the verdict, writes report-N.{json,md}."""
    from logitsmatch.compare import Mode, Policy, compare
    from logitsmatch.golden_io import load_golden
    from logitsmatch.report import render_terminal, write_reports

    policy = Policy(mode=Mode.DETERMINISTIC, metrics=METRICS)
    first = load_golden(results[0])
    identical = True
    for index, path in enumerate(results[1:], start=2):
        result = compare(first, load_golden(path), policy)
        write_reports(result, json_path=str(report_dir / f"report-{index}.json"),
                      markdown_path=str(report_dir / f"report-{index}.md"))
        if result.passed:
            print(f"[logitsmatch] DETERMINISTIC: run {index} is bit-identical to run 1 ({', '.join(METRICS)})")
        else:
            identical = False
            print(f"[logitsmatch] NOT DETERMINISTIC: run {index} differs from run 1 "
                  f"(report: {report_dir / f'report-{index}.md'})")
            print(render_terminal(result))
    return identical


def main(args: argparse.Namespace) -> int:
    if args.runs < 2:
        raise BadInput(f"--runs must be at least 2, got {args.runs}")
    root = paths.results_root() / args.suite / ".determinism" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    results = []
    for index in range(1, args.runs + 1):
        print(f"[logitsmatch] determinism: run {index} of {args.runs}", flush=True)
        run_args = copy.copy(args)
        run_args.no_compare = True
        with _results_root(root / f"run-{index}"):
            code = run_cli.main(run_args)
        if code != EXIT_OK:
            return code
        found = sorted((root / f"run-{index}").glob("*/*/*/result.json"))
        if len(found) != 1:
            raise BadInput(f"run {index} published {len(found)} results under {root / f'run-{index}'}")
        results.append(found[0])
    return EXIT_OK if judge(results, root) else EXIT_DRIFT
