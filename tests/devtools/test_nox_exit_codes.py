"""The exit-code contract through nox: nox reduces every failed session to 1 (drift), so the sessions carry the
logitsmatch command's own code out (nox_support.carry), the most severe when several differ."""

from __future__ import annotations

import subprocess
import sys

from logitsmatch.devtools.nox_support import most_severe
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
