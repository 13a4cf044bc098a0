"""Shared fixtures: the project root and the Megatron reference cases in ../shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
MEGATRON_CASES = PROJECT.parent / "shared" / "megatron_cases"
TINY_SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
SEED_SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq"
DEFAULT_TOOLCHAIN = "py3.11-torch2.13.0-mcore0.16.1"


@pytest.fixture
def project() -> Path:
    return PROJECT


@pytest.fixture
def megatron_cases() -> Path:
    if not MEGATRON_CASES.is_dir():
        pytest.skip("../shared/megatron_cases is not present")
    return MEGATRON_CASES


def run_logitsmatch(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "logitsmatch", *args],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
