"""Judge a published result against its golden and print the report.

A missing golden is its own outcome, NO GOLDEN (exit 5): not a pass and not
drift, and it names the ``nox -s record`` command that makes the golden. The
JSON, Markdown and JUnit reports are written beside the result
(``report.json``, ``report.md``, ``report.junit.xml``) so CI can keep them.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch.errors import EXIT_DRIFT, EXIT_NO_GOLDEN, EXIT_OK, ExitCode
from logitsmatch.golden_pairs import require_one_record
from logitsmatch.judge.compare import compare
from logitsmatch.judge.divergence import annotate, suite_decoder
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.report import render_terminal, write_reports
from logitsmatch.log import logger
from logitsmatch.paths import project_root, report_paths, shown_path


def with_hardware(result, golden_path: Path, current_path: Path) -> None:
    """Note the two sides' hardware classes (from their provenance sidecars) on ``result``: across classes bitwise
    agreement is not expected, and a reader must not take a last-bits difference for toolchain drift."""
    from logitsmatch.hardware import sides
    from logitsmatch.judge.policy import Mode

    result.hardware = sides(*(provenance(path) for path in (golden_path, current_path)))
    note = result.hardware and result.hardware["note"]
    if note:
        if result.policy.mode is Mode.DETERMINISTIC:
            note += "; in deterministic mode a difference here cannot be told apart from hardware drift"
        else:
            note += f"; judged at the tolerance (abs {result.policy.abs_tol:g})"
        result.warnings.append(note)


def run_dtype(*files: Path) -> str | None:
    """The dtype the files' runs computed in (their provenance sidecars' ``platform_decisions.dtype``), the
    coarsest when they differ; None when no sidecar says. The suite's MODEL_ARGS cannot tell: a suite's --bf16
    runs in float32 on the cpu platform."""
    from logitsmatch.judge.ulps import coarsest

    dtypes = []
    for path in files:
        decisions = (provenance(path) or {}).get("platform_decisions")
        dtypes.append(decisions.get("dtype") if isinstance(decisions, dict) else None)
    return coarsest(dtypes)


def provenance(path: Path) -> dict | None:
    """A file's provenance sidecar when it has one; a sidecar that cannot be trusted is bad input."""
    from logitsmatch.paths import provenance_path
    from logitsmatch.provenance import read_sidecar

    sidecar = provenance_path(Path(path))
    return read_sidecar(sidecar) if sidecar.exists() else None


def judge_against_golden(suite, result_path: Path, golden_path: Path, toolchain: str,
                         reports_beside: bool = True) -> ExitCode:
    """Print the verdict of ``result_path`` against ``golden_path``: EXIT_OK, EXIT_DRIFT or EXIT_NO_GOLDEN.

    ``reports_beside``: also write the JSON, Markdown and JUnit reports beside the result (not when the
    result lies in a tree this command only reads, such as ``record --from``'s collection).
    """
    if not golden_path.is_file():
        print(f"NO GOLDEN: {shown_path(golden_path)} does not exist (suite {suite.name}, toolchain {toolchain}); "
              f"make it from this result with: nox -s record -- {toolchain} {suite.name}")
        return EXIT_NO_GOLDEN
    require_one_record(golden_path, suite.name, toolchain)
    golden, current = load_golden(golden_path), load_golden(result_path)
    result = compare(golden, current, suite.policy, run_dtype(golden_path, result_path))
    result.metrics_origin = f"suite {suite.name}'s METRICS"
    annotate(result, golden, current, suite_decoder(suite, project_root()))
    with_hardware(result, golden_path, result_path)
    if reports_beside:
        reports = report_paths(result_path)
        write_reports(result, json_path=reports["json"], markdown_path=reports["markdown"],
                      junit_path=reports["junit"])
    logger.info(f"golden: {golden_path}")
    print(render_terminal(result))
    return EXIT_OK if result.passed else EXIT_DRIFT
