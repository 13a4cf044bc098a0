"""A suite run several times, every result judged bit-exact against the first: the flow behind
`logitsmatch determinism`.

Each run is the whole ``run_suite`` flow (same options, no golden check) publishing into its own
folder under ``results/<suite>/.determinism/<id>/run-N/``, so the suite's published result and its
goldens are untouched; the results are judged with the DETERMINISTIC policy (tokens, logprobs and
generated text, bit-exact).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.flows import execute
from logitsmatch.flows.run_suite import run_suite
from logitsmatch.log import logger

METRICS = ("generated_tokens", "logprobs", "generated_text")


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


def run_all(_, args: argparse.Namespace) -> tuple[Path, list[Path]] | int:
    """Each run in turn into ``run-N`` of a fresh folder; a failed run ends the flow with its own exit code."""
    if args.runs < 2:
        raise BadInput(f"--runs must be at least 2, got {args.runs}")
    root = paths.results_root() / args.suite / ".determinism" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    results = []
    for index in range(1, args.runs + 1):
        logger.info(f"determinism: run {index} of {args.runs}")
        run_args = copy.copy(args)
        run_args.no_compare = True
        code = run_suite(run_args, results_root=root / f"run-{index}")
        if code != EXIT_OK:
            return code
        found = sorted((root / f"run-{index}").glob("*/*/*/result.json"))
        if len(found) != 1:
            raise BadInput(f"run {index} published {len(found)} results under {root / f'run-{index}'}")
        results.append(found[0])
    return root, results


def judge_runs(runs: tuple[Path, list[Path]], args: argparse.Namespace) -> int:
    """Exit 0 when every run matches the first, 1 (drift) when one does not."""
    root, results = runs
    return EXIT_OK if judge(results, root) else EXIT_DRIFT


WORKFLOW = (run_all, judge_runs)


def determinism(args: argparse.Namespace) -> int:
    """Run the suite ``--runs`` times (the run's own options), then judge the results."""
    return execute(WORKFLOW, args)
