"""Shared fixtures, and the rule for tests marked ``inference`` (they run megatron-core).

Without torch and megatron-core such a test is skipped — except when ``CI`` is
set, where it fails: CI must never go green with no inference coverage.
Shared helpers live in ``support``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import MEGATRON_CASES, PROJECT, toolchain_missing  # noqa: E402

_MISSING: list[str | None] = []

# tests/data holds byte copies of Megatron-LM files, one of them named test_*.py: data, not tests.
collect_ignore_glob = ["data/*"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("inference") is None:
        return
    if not _MISSING:
        _MISSING.append(toolchain_missing())
    if _MISSING[0] is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {_MISSING[0]}", pytrace=False)
        pytest.skip(_MISSING[0])


@pytest.fixture
def project() -> Path:
    return PROJECT


@pytest.fixture
def megatron_cases() -> Path:
    if not MEGATRON_CASES.is_dir():
        pytest.skip("../shared/megatron_cases is not present")
    return MEGATRON_CASES
