"""Shared fixtures, and the rule for the tests in ``tests/inference/`` (they run megatron-core).

Every test in that folder, and no other, carries the ``inference`` marker: the folder is the marker, so
``-m "not inference"`` deselects exactly that folder. Without torch and megatron-core such a test is
skipped, except when ``CI`` is set, where it fails: CI must never go green with no inference coverage.
The other folders hold a room's tests each (judge, run, rank, explain, devtools, cli, house).
Shared helpers live in ``support``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402
    MEGATRON_CASES_ENV,
    MEGATRON_INFERENCE_CASES,
    MOE_EP8_CASE,
    PROJECT,
    megatron_case_dirs,
    megatron_cases_folder,
    toolchain_missing,
)

_MISSING: list[str | None] = []

# tests/data holds data (Megatron's goldens, recorded verdicts), never tests: nothing there is collected.
collect_ignore_glob = ["data/*"]


INFERENCE_FOLDER = Path(__file__).resolve().parent / "inference"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The inference marker follows the folder; a test elsewhere that declares it is a usage error."""
    for item in items:
        inside = INFERENCE_FOLDER in Path(item.path).resolve().parents
        if not inside and item.get_closest_marker("inference") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked inference outside tests/inference/: move it there")
        if inside:
            item.add_marker(pytest.mark.inference)


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


@pytest.fixture(scope="session")
def megatron_cases() -> Path:
    """The folder of Megatron-LM's case folders (model_config.yaml + golden), for the tests that need
    Megatron's data: skipped without it, except under CI, where it must be there."""
    folder = megatron_cases_folder()
    if not folder.is_dir():
        message = f"Megatron's case folders are not at {folder} (../shared/megatron_cases, or ${MEGATRON_CASES_ENV})"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {message}", pytrace=False)
        pytest.skip(message)
    names = [case.name for case in megatron_case_dirs(folder)]
    assert names, f"{folder} holds no case folders"
    assert MOE_EP8_CASE in names, f"{folder} lacks the MoE EP8 case {MOE_EP8_CASE}"
    return folder


@pytest.fixture(scope="session")
def megatron_case_folders(megatron_cases) -> list[Path]:
    """Every case folder of Megatron-LM's (each with a model_config.yaml), sorted; never empty."""
    return megatron_case_dirs(megatron_cases)


@pytest.fixture(scope="session")
def megatron_inference_cases() -> list[Path]:
    """Every inference case folder of Megatron-LM (../shared/megatron_inference_cases), sorted: skipped without
    them, except under CI, where they must be there, all of them."""
    if not MEGATRON_INFERENCE_CASES.is_dir():
        message = f"Megatron's inference case folders are not at {MEGATRON_INFERENCE_CASES}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set: {message}", pytrace=False)
        pytest.skip(message)
    folders = megatron_case_dirs(MEGATRON_INFERENCE_CASES)
    assert len(folders) >= 60, f"{MEGATRON_INFERENCE_CASES} holds {len(folders)} case folders, not Megatron's 60"
    return folders
