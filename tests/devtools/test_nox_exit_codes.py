"""The exit-code contract through nox: nox reduces every failed session to 1 (drift), so the sessions carry the
logitsmatch command's own code out (session_outcome.carry), the most severe when several differ; and a session
ends with its answer, a line per suite."""

from __future__ import annotations

import subprocess
import sys

from logitsmatch.devtools.session_outcome import most_severe, session_summary
from logitsmatch.errors import ExitCode
from support import DEFAULT_TOOLCHAIN, PROJECT


def test_the_most_severe_code_wins():
    assert most_severe([1, 5]) == ExitCode.NO_GOLDEN
    assert most_severe([1, 3, 5, 2]) == ExitCode.RUN_FAILED
    assert most_severe([1, 70, 130]) == ExitCode.INTERRUPTED
    assert most_severe([1, 1]) == ExitCode.DRIFT
    assert most_severe([42]) == ExitCode.RUN_FAILED  # outside the contract: the command failed to run


def test_a_bad_suite_name_through_nox_exits_2_not_1():
    completed = subprocess.run([sys.executable, "-m", "nox", "-f", str(PROJECT / "noxfile.py"), "-s",
                                f"logitsmatch({DEFAULT_TOOLCHAIN})", "--", "no_such_suite"],
                               cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "no_such_suite" in completed.stderr


def test_a_session_ends_with_a_line_per_suite_the_overall_outcome_and_the_hardware_note_once(tmp_path,
                                                                                             monkeypatch):
    import json

    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(tmp_path))
    report = {"summary": {"logprobs": {"moved": 24, "compared": 158, "over_tolerance": 0}},
              "hardware": {"golden": "x86_64-amd-avx2-mkl", "current": "x86_64-amd-avx512-mkl", "same_class": False}}
    for suite in ("suite_a", "suite_b"):
        folder = tmp_path / suite / "cpu" / DEFAULT_TOOLCHAIN
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(report))
    lines = session_summary(DEFAULT_TOOLCHAIN, {"suite_a": (0, 12.4), "suite_b": (1, 9.0), "suite_c": (3, 30.2)})
    assert lines[0] == f"{DEFAULT_TOOLCHAIN}: 3 suites"
    assert lines[1].split()[:2] == ["pass", "suite_a"] and "24 of 158 logprobs moved, 0 over tolerance" in lines[1]
    assert lines[1].endswith("12 s") and lines[2].split()[:2] == ["drift", "suite_b"]
    assert lines[3].split()[:3] == ["run", "failed", "suite_c"] and "moved" not in lines[3]  # not judged: no report
    assert lines[4] == f"{DEFAULT_TOOLCHAIN}: run failed (the most severe of 2 failing suites)"
    assert lines[5] == f"what moved: {tmp_path / 'suite_b' / 'cpu' / DEFAULT_TOOLCHAIN / 'report.md'}"
    assert [line for line in lines if line.startswith("note:")] == [lines[6]] and "x86_64-amd-avx512-mkl" in lines[6]
    assert session_summary(DEFAULT_TOOLCHAIN, {"suite_a": (0, 1.0)})[-2] == f"{DEFAULT_TOOLCHAIN}: pass"
