"""Judge a published result against its golden and print the report.

A missing golden is a failure that says how to record one, never a pass. The
JSON, Markdown and JUnit reports are written beside the result
(``report.json``, ``report.md``, ``report.junit.xml``) so CI can keep them.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch.compare import Policy, compare
from logitsmatch.golden_io import load_golden
from logitsmatch.report import render_terminal, write_reports


def policy_for(suite) -> Policy:
    return Policy.from_suite(suite.metrics, suite.comparison)


def judge_against_golden(suite, result_path: Path, golden_path: Path, toolchain: str) -> bool:
    """Print the verdict of ``result_path`` against ``golden_path``; True when it passes."""
    if not golden_path.is_file():
        print(
            f"[logitsmatch] FAIL: no golden for this suite, platform and toolchain: {golden_path}\n"
            f"[logitsmatch] record one from this result with: nox -s record -- {toolchain} {suite.name}"
        )
        return False
    result = compare(load_golden(golden_path), load_golden(result_path), policy_for(suite))
    write_reports(
        result,
        json_path=str(result_path.with_name("report.json")),
        markdown_path=str(result_path.with_name("report.md")),
        junit_path=str(result_path.with_name("report.junit.xml")),
    )
    print(f"[logitsmatch] golden: {golden_path}")
    print(render_terminal(result))
    return result.passed
