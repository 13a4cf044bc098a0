"""Toolchain-to-toolchain drift: locate each toolchain's output, compare pairs, tabulate.

A toolchain's output for a suite is its latest fresh result (results tree) or,
failing that, its committed golden; ``source`` can force one or the other.
Every cell of the matrix is exactly what ``logitsmatch compare`` says for that
pair under the suite's policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import load_golden

SOURCES = ("auto", "results", "goldens")


def locate(suite: str, platform: str, toolchain: str, source: str = "auto") -> Path | None:
    """The file holding ``toolchain``'s output for ``suite``, or None."""
    result = paths.result_path(suite, platform, toolchain)
    golden = paths.golden_path(suite, platform, toolchain)
    candidates = {"auto": (result, golden), "results": (result,), "goldens": (golden,)}[source]
    return next((path for path in candidates if path.is_file()), None)


@dataclass(frozen=True)
class Cell:
    """One ordered pair (row = golden side, column = current side) of one suite."""

    tokens_agree: bool
    first_divergence: int | None  # smallest first-divergence index over requests
    max_abs_delta: float
    n_over_tolerance: int
    passed: bool

    def to_dict(self) -> dict:
        delta = self.max_abs_delta
        return {
            "tokens_agree": self.tokens_agree,
            "first_divergence": self.first_divergence,
            "max_abs_delta": delta if math.isfinite(delta) else str(delta),
            "n_over_tolerance": self.n_over_tolerance,
            "passed": self.passed,
        }

    def label(self) -> str:
        tokens = "tokens =" if self.tokens_agree else f"tokens ≠ @{self.first_divergence}"
        return f"{tokens}, max {self.max_abs_delta:.2g}, {self.n_over_tolerance} over"


def cell_of(result) -> Cell:
    divergences = [index for index in result.first_divergences.values() if index is not None]
    return Cell(
        tokens_agree=result.tokens_agree,
        first_divergence=min(divergences) if divergences else None,
        max_abs_delta=float(result.max_abs_delta),
        n_over_tolerance=int(result.n_over_tolerance),
        passed=bool(result.passed),
    )


def drift_matrix(suite, platform: str, toolchains: list[str], source: str, policy) -> dict:
    """{"toolchains": [...], "files": {...}, "cells": {row: {col: Cell}}} for one suite."""
    files = {name: locate(suite.name, platform, name, source) for name in toolchains}
    present = [name for name in toolchains if files[name] is not None]
    documents = {name: load_golden(files[name]) for name in present}
    cells = {
        row: {col: cell_of(compare(documents[row], documents[col], policy)) for col in present}
        for row in present
    }
    return {"toolchains": present, "missing": [n for n in toolchains if n not in present], "files": files, "cells": cells}


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise BadInput(f"unknown source {source!r} (choose {', '.join(SOURCES)})")
    return source
