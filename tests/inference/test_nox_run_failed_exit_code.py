"""A run that fails under `nox -s "logitsmatch(T)"` ends nox with the run's code (3), not nox's 1 (drift)."""

from __future__ import annotations

import os
import subprocess
import sys

from support import DEFAULT_TOOLCHAIN, PROJECT, TINY_SUITE


def test_a_run_past_its_deadline_through_nox_exits_3_not_1(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "nox", "-f", str(PROJECT / "noxfile.py"), "-s",
                                f"logitsmatch({DEFAULT_TOOLCHAIN})", "--", TINY_SUITE, "--timeout", "2"],
                               cwd=PROJECT, capture_output=True, text=True, timeout=900,
                               env={**os.environ, "LOGITSMATCH_RESULTS": str(tmp_path / "results")})
    assert completed.returncode == 3, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "run failed" in completed.stderr
