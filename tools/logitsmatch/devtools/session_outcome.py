"""What a nox session ends with: its summary, and the exit code it carries out of nox.

nox ends with status 1 whenever a session failed (its final reduce), and 1 is drift in the contract: a
failed run or a bad input would read as drift. So each failure a session meets records the contract's
code for it, and when nox's interpreter exits, the most severe code recorded replaces nox's 1. The
order: what stopped an answer (interrupted, internal error, run failed, bad input) before NO GOLDEN
(nothing to judge against), before drift (an answer).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_UNSUPPORTED, BadInput, ExitCode, outcome_name
from logitsmatch.files import read_input

SEVERITY = (ExitCode.INTERRUPTED, ExitCode.INTERNAL, ExitCode.RUN_FAILED, ExitCode.BAD_INPUT, ExitCode.NO_GOLDEN,
            ExitCode.DRIFT)
_failures: list[int] = []


def most_severe(codes: list[int]) -> int:
    """The code that wins among ``codes`` (SEVERITY order; a code outside the contract counts as run failed)."""
    known = [code for code in SEVERITY if code in codes]
    return int(known[0]) if known else int(ExitCode.RUN_FAILED)


def carry(session, code: int | None) -> None:
    """Record a failure's contract code for the end of nox (None: the command did not start: run failed).

    Only in nox's own process (a real nox Session): a test's stand-in session changes no exit status.
    """
    if not type(session).__module__.startswith("nox."):
        return
    if not _failures:
        atexit.register(_exit_with_the_contracts_code)
    _failures.append(int(ExitCode.RUN_FAILED) if code is None else code)


def _exit_with_the_contracts_code() -> None:
    code = most_severe(_failures)
    if code != ExitCode.DRIFT:  # nox's own status, 1, already says drift
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_command(session, *args, **kwargs):
    """``session.run`` of a logitsmatch command: a failure carries the command's exit code out of nox."""
    from nox.command import CommandFailed

    try:
        return session.run(*args, **kwargs)
    except CommandFailed as exc:
        carry(session, exc.return_code)
        raise


def fail(session, code: int, message: str):
    """Fail the session with ``message``, carrying ``code`` out of nox."""
    carry(session, code)
    session.error(message)


def outcomes_summary(session, who: str, outcomes: dict[str, list[str]], record_with: str | None = None) -> None:
    """Fail the session with one line per outcome other than pass: drift apart from NO GOLDEN, a bad input, a
    failed run or a crash, each with its exit code's name (``errors.outcome_name``)."""
    parts = [f"{outcome}: {', '.join(suites)}" for outcome, suites in outcomes.items() if suites]
    no_golden = outcomes.get("NO GOLDEN")
    if no_golden and record_with:
        parts.append(f"make the missing goldens with: nox -s record -- {record_with} {' '.join(no_golden)}")
    if parts:
        session.error(f"{who}: " + "; ".join(parts))


def session_summary(toolchain_name: str, ended: dict[str, tuple[int | None, float]]) -> list[str]:
    """What a session ends with: a line per suite (outcome, what moved, wall time), the overall outcome, and
    the report of each suite that drifted (the runs print only their verdict), and the hardware-class note once
    (each run's report says it too; the summary says it for all of them)."""
    lines, crossings = [f"{toolchain_name}: {len(ended)} suite{'s' if len(ended) != 1 else ''}"], set()
    drifted: list[Path] = []
    for suite, (code, seconds) in ended.items():
        detail = ""
        report = paths.result_dir(suite, "cpu", toolchain_name) / "report.json"
        if code in (0, 1) and report.is_file():  # judged now: its report is this run's
            try:
                written = json.loads(read_input(report, "report"))
                logprobs = written["summary"]["logprobs"]
                detail = (f"{logprobs['moved']} of {logprobs['compared']} logprobs moved, "
                          f"{logprobs['over_tolerance']} over tolerance")
                sides = written.get("hardware") or {}
                if sides.get("same_class") is False:
                    crossings.add((sides["golden"], sides["current"]))
                if code == 1:
                    drifted.append(report.with_suffix(".md"))
            except (BadInput, ValueError, KeyError, TypeError):
                detail = "(its report cannot be read)"
        lines.append(f"  {outcome_name(code):<12} {suite:<60} {detail:<46} {seconds:6.0f} s")
    codes = [code for code, _ in ended.values() if code not in (0, EXIT_UNSUPPORTED)]
    lines.append(f"{toolchain_name}: " + (f"{outcome_name(most_severe(codes))} (the most severe of "
                                          f"{len(codes)} failing suite{'s' if len(codes) != 1 else ''})"
                                          if codes else "pass"))
    lines += [f"what moved: {path}" for path in drifted]
    for golden, current in sorted(crossings):
        lines.append(f"note: goldens of hardware class {golden}, these runs on {current}: bitwise agreement is not "
                     "expected across classes, so moved values within tolerance are not drift")
    return lines
