"""N x N tables of compared outputs: toolchain drift (``matrix``) and layout invariance.

A toolchain's output for a suite is its latest fresh result (results tree) or,
failing that, its committed golden; ``source`` can force one or the other.
Every cell of a table is exactly what ``logitsmatch compare`` says for that
pair under the table's policy. ``render_*`` draw tables for people (terminal,
Markdown, heatmap PNG); a table is ``{"names", "cells", "missing"}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import paths
from logitsmatch.collection import collected_result, is_collection
from logitsmatch.errors import BadInput
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden

SOURCES = ("auto", "results", "goldens")


def locate(suite: str, platform: str, toolchain: str, source: str = "auto", hardware_class: str | None = None) -> Path | None:
    """The file holding ``toolchain``'s output for ``suite``, or None; ``source`` may name a collected tree."""
    if source not in SOURCES:
        return collected_result(Path(source), suite, platform, toolchain, hardware_class)
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
        return {
            "tokens_agree": self.tokens_agree,
            "first_divergence": self.first_divergence,
            "max_abs_delta": json_float(self.max_abs_delta),
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


def pairwise(documents: dict[str, dict], policy) -> dict[str, dict[str, Cell]]:
    """Every ordered pair of the documents (row = golden side, column = current side), as `compare` judges it."""
    return {row: {col: cell_of(compare(documents[row], documents[col], policy)) for col in documents} for row in documents}


def drift_matrix(suite, platform: str, toolchains: list[str], source: str, policy, hardware_class: str | None = None) -> dict:
    """{"names": [...toolchains], "missing", "files", "cells": {row: {col: Cell}}} for one suite."""
    files = {name: locate(suite.name, platform, name, source, hardware_class) for name in toolchains}
    present = [name for name in toolchains if files[name] is not None]
    cells = pairwise({name: load_golden(files[name]) for name in present}, policy)
    return {"names": present, "missing": [n for n in toolchains if n not in present], "files": files, "cells": cells}


def check_source(source: str) -> str:
    """auto, results, goldens, or a folder made by ``logitsmatch collect``."""
    if source not in SOURCES and not is_collection(Path(source)):
        raise BadInput(f"unknown source {source!r} (choose {', '.join(SOURCES)}, or a folder made by logitsmatch collect)")
    return source


# --- rendering --------------------------------------------------------------------------------


def render_markdown(tables: dict, title: str, notes: list[str] | None = None) -> str:
    """One section per table: an N x N Markdown grid of cell labels (row = golden, column = current)."""
    lines = [f"# {title}", "", *(notes or [])]
    if notes:
        lines.append("")
    for heading, table in tables.items():
        names = table["names"]
        lines += [f"## {heading}", "", "row = golden, column = current", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for row in names:
            lines.append(f"| **{row}** | " + " | ".join(table["cells"][row][col].label() for col in names) + " |")
        if table["missing"]:
            lines += ["", "No output for: " + ", ".join(table["missing"])]
        lines.append("")
    return "\n".join(lines)


def render_terminal(tables: dict) -> str:
    out = []
    for heading, table in tables.items():
        names = table["names"]
        out.append(f"{heading}  (row = golden, column = current)")
        width = max(len(name) for name in names) if names else 0
        for row in names:
            for col in names:
                if row != col:
                    out.append(f"  {row:<{width}} -> {col:<{width}}  {table['cells'][row][col].label()}")
        if table["missing"]:
            out.append("  no output for: " + ", ".join(table["missing"]))
    return "\n".join(out)


def render_heatmap(tables: dict, path, short_title=lambda heading: heading) -> None:
    """One panel per table with outputs (a path or binary file); colour = log10 max |delta|, text = tokens and
    max |delta|. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(heading, table) for heading, table in tables.items() if table["names"]]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for axis, (heading, table) in zip(axes[0], panels):
        names = table["names"]
        values = np.array(
            [[math.log10(max(table["cells"][r][c].max_abs_delta, 1e-12)) for c in names] for r in names]
        )
        image = axis.imshow(values, cmap="viridis", vmin=-12, vmax=1)
        for i, row in enumerate(names):
            for j, col in enumerate(names):
                cell = table["cells"][row][col]
                text = ("=" if cell.tokens_agree else f"≠@{cell.first_divergence}") + f"\n{cell.max_abs_delta:.1e}"
                axis.text(j, i, text, ha="center", va="center", color="white" if values[i, j] < -4 else "black", fontsize=8)
        short = [name.replace("-", "\n", 2) for name in names]
        axis.set_xticks(range(len(names)), short, fontsize=7)
        axis.set_yticks(range(len(names)), short, fontsize=7)
        axis.set_xlabel("current")
        axis.set_ylabel("golden")
        axis.set_title(short_title(heading), fontsize=9)
        figure.colorbar(image, ax=axis, label="log10 max |Δ logprob| (1e-12 = identical)")
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def table_json(table: dict) -> dict:
    return {
        "names": table["names"],
        "missing": table["missing"],
        "files": {name: str(paths.shown_path(path)) for name, path in table.get("files", {}).items() if path is not None},
        "cells": {r: {c: cell.to_dict() for c, cell in cols.items()} for r, cols in table["cells"].items()},
    }
