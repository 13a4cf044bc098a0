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
from logitsmatch.golden_pairs import require_one_record
from logitsmatch.hardware import class_of_golden
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.judge.report import short_number, ulps_text

SOURCES = ("auto", "results", "goldens")


def locate(
    suite: str, platform: str, toolchain: str, source: str = "auto", hardware_class: str | None = None
) -> Path | None:
    """The file holding ``toolchain``'s output for ``suite``, or None; ``source`` may name a collected tree."""
    if source not in SOURCES:
        return collected_result(Path(source), suite, platform, toolchain, hardware_class)
    result = paths.result_path(suite, platform, toolchain)
    golden = paths.golden_path(suite, platform, toolchain)
    candidates = {"auto": (result, golden), "results": (result,), "goldens": (golden,)}[source]
    found = next((path for path in candidates if path.is_file()), None)
    if found == golden:
        require_one_record(golden, suite, toolchain)
    return found


@dataclass(frozen=True)
class Cell:
    """One ordered pair (row = golden side, column = current side) of one suite."""

    tokens_agree: bool
    first_divergence: int | None  # smallest first-divergence index over requests
    max_abs_delta: float
    n_over_tolerance: int
    passed: bool
    n_moved: int = 0  # compared logprobs that differ bitwise
    n_compared: int = 0
    max_ulps: int = 0
    same_class: bool | None = None  # whether the two results ran on one hardware class (None: not known)

    @property
    def identical(self) -> bool:
        """Same tokens and every compared logprob equal to the last bit (and every check passed)."""
        return self.tokens_agree and self.n_moved == 0 and self.passed

    def to_dict(self) -> dict:
        return {
            "tokens_agree": self.tokens_agree,
            "first_divergence": self.first_divergence,
            "max_abs_delta": json_float(self.max_abs_delta),
            "max_ulps": self.max_ulps,
            "n_moved": self.n_moved,
            "n_compared": self.n_compared,
            "n_over_tolerance": self.n_over_tolerance,
            "passed": self.passed,
            "same_class": self.same_class,
        }

    def code(self) -> str:
        """The cell in a few characters (see LEGEND): =, ~36, !3, @5 !3."""
        cross = "†" if self.same_class is False else ""
        if self.identical:
            return "=" + cross
        parts = [] if self.tokens_agree else [f"@{self.first_divergence}"]
        if self.n_over_tolerance:
            parts.append(f"!{self.n_over_tolerance}")
        elif self.n_moved:
            parts.append(f"~{self.n_moved}")
        return (" ".join(parts) or "fails") + cross

    def label(self) -> str:
        """The cell in words, for Markdown."""
        cross = " (hardware classes differ)" if self.same_class is False else ""
        if self.identical:
            return "=" + cross
        tokens = "tokens =" if self.tokens_agree else f"tokens ≠ @{self.first_divergence}"
        moved = f"{self.n_moved} of {self.n_compared} moved"
        if self.n_moved:
            moved += f" (max {short_number(self.max_abs_delta)}, {ulps_text(self.max_ulps)})"
        return f"{tokens}, {moved}, {self.n_over_tolerance} over" + ("" if self.passed else ", fails") + cross


LEGEND = ("= bitwise identical (same tokens, every logprob equal to the last bit); ~N: N logprobs moved, "
          "all within tolerance; !N: N logprobs over tolerance; @K: tokens differ from generated index K; "
          "fails: another check failed; †: the two results ran on different hardware classes (bitwise agreement "
          "is not expected); row = golden side, column = current side")


def cell_of(result, same_class: bool | None = None) -> Cell:
    divergences = [index for index in result.first_divergences.values() if index is not None]
    return Cell(
        tokens_agree=result.tokens_agree,
        first_divergence=min(divergences) if divergences else None,
        max_abs_delta=float(result.max_abs_delta),
        n_over_tolerance=int(result.n_over_tolerance),
        passed=bool(result.passed),
        n_moved=int(result.n_moved),
        n_compared=int(result.n_compared),
        max_ulps=int(result.max_ulps),
        same_class=same_class,
    )


def pairwise(
    documents: dict[str, dict], policy, classes: dict[str, str | None] | None = None
) -> dict[str, dict[str, Cell]]:
    """Every ordered pair of the documents (row = golden side, column = current side), as `compare` judges it;
    ``classes`` (each document's hardware class, None where unknown) marks the pairs across classes."""
    classes = classes or {}

    def same(row: str, col: str) -> bool | None:
        known = classes.get(row), classes.get(col)
        return None if None in known else known[0] == known[1]

    return {row: {col: cell_of(compare(documents[row], documents[col], policy), same(row, col)) for col in documents}
            for row in documents}


def drift_matrix(
    suite, platform: str, toolchains: list[str], source: str, policy, hardware_class: str | None = None
) -> dict:
    """{"names": [...toolchains], "missing", "files", "cells": {row: {col: Cell}}} for one suite."""
    files = {name: locate(suite.name, platform, name, source, hardware_class) for name in toolchains}
    present = [name for name in toolchains if files[name] is not None]
    classes = {name: class_of_golden(files[name]) for name in present}
    cells = pairwise({name: load_golden(files[name]) for name in present}, policy, classes)
    return {"names": present, "missing": [n for n in toolchains if n not in present], "files": files, "cells": cells,
            "tolerance": policy.abs_tol, "hardware_classes": classes}


def check_source(source: str) -> str:
    """auto, results, goldens, or a folder made by ``logitsmatch collect``."""
    if source not in SOURCES and not is_collection(Path(source)):
        raise BadInput(
            f"unknown source {source!r} (choose {', '.join(SOURCES)}, or a folder made by logitsmatch collect)"
        )
    return source


# --- rendering --------------------------------------------------------------------------------


def short_names(names: list[str]) -> dict[str, str]:
    """Each name's last dash-separated part when those parts tell the names apart (mcore0.16.1), else the name."""
    last = [name.rsplit("-", 1)[-1] for name in names]
    if len(set(last)) == len(last):
        return dict(zip(names, last))
    return {name: name for name in names}


def short_suite(name: str) -> str:
    """A suite's name without the family's common prefix and suffix: tp8_pp1_dp1_tiny."""
    return name.removeprefix("gpt_dynamic_inference_").removesuffix("_logitsmatch_zmq")


def render_markdown(tables: dict, title: str, notes: list[str] | None = None, noun: str = "toolchains") -> str:
    """One section per table: an N x N Markdown grid of cell labels (row = golden, column = current)."""
    lines = [f"# {title}", "", *(notes or [])]
    if notes:
        lines.append("")
    lines += [f"Cells: {LEGEND}.", "", summary_line(tables, noun), ""]
    for heading, table in tables.items():
        names = table["names"]
        lines += [f"## {heading}", ""]
        if names:
            lines.append("| | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for row in names:
                lines.append(f"| **{row}** | " + " | ".join(table["cells"][row][col].label() for col in names) + " |")
        if table["missing"]:
            lines += ["", "No output for: " + ", ".join(table["missing"])]
        lines.append("")
    return "\n".join(lines)


def render_terminal(tables: dict, marked: str | None = None, noun: str = "toolchains") -> str:
    """One grid per table (columns numbered as the rows), the legend, and the closing summary line."""
    out = [f"cells: {LEGEND}" + ("; * baseline" if marked else "")]
    for heading, table in tables.items():
        names = table["names"]
        out += ["", heading]
        if names:
            keys = [str(i) for i in range(1, len(names) + 1)]
            codes = [[table["cells"][row][col].code() for col in names] for row in names]
            width = max(len(text) for text in keys + [c for row in codes for c in row])
            label = [f"{key:>2} {name}{' *' if name == marked else ''}" for key, name in zip(keys, names)]
            pad = max(len(text) for text in label)
            out.append(" " * pad + "  " + " ".join(key.rjust(width) for key in keys))
            for text, row in zip(label, codes):
                out.append(text.ljust(pad) + "  " + " ".join(code.rjust(width) for code in row))
        if table["missing"]:
            out.append("  no output for: " + ", ".join(table["missing"]))
    out += ["", summary_line(tables, noun)]
    return "\n".join(out)


def identical_groups(table: dict) -> list[list[str]]:
    """The names split into groups whose outputs are bitwise identical to each other, in table order."""
    groups: list[list[str]] = []
    for name in table["names"]:
        for group in groups:
            if table["cells"][group[0]][name].identical and table["cells"][name][group[0]].identical:
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def _group_text(group: list[str], short: dict[str, str]) -> str:
    return short[group[0]] if len(group) == 1 else "{" + ", ".join(short[name] for name in group) + "}"


def summary_line(tables: dict, noun: str = "toolchains") -> str:
    """One line over every table: how many are identical throughout, and how the others differ.

    "10 suites × 3 toolchains: 9 suites identical, 1 differs: ep8_tiny mcore0.16.1↔mcore0.19.2, 36 values,
    max 4.8e-7 (1 ulp), none over tolerance"
    """
    everyone = list(dict.fromkeys(name for table in tables.values() for name in table["names"]))
    head = f"{len(tables)} suite{'s' if len(tables) != 1 else ''} × {len(everyone)} {noun}"
    short = short_names(everyone)
    empty = [heading for heading, table in tables.items() if len(table["names"]) < 2]
    differing = []
    for heading, table in tables.items():
        groups = identical_groups(table)
        if len(groups) < 2:
            continue
        cells = [cell for row in table["cells"].values() for cell in row.values() if not cell.identical]
        moved = max(cell.n_moved for cell in cells)
        over = max(cell.n_over_tolerance for cell in cells)
        worst = max(cell.max_abs_delta for cell in cells)
        ulps = max(cell.max_ulps for cell in cells)
        diverged = sum(not cell.tokens_agree for cell in cells)
        text = f"{short_suite(heading)} " + "↔".join(_group_text(group, short) for group in groups)
        text += f", {moved} values, max {short_number(worst)} ({ulps_text(ulps)})"
        text += f", tokens differ in {diverged} ordered pair{'s' if diverged != 1 else ''}" if diverged else ""
        text += f", up to {over} over tolerance" if over else ", none over tolerance"
        other = sum(not cell.passed and cell.tokens_agree and not cell.n_over_tolerance for cell in cells)
        text += f", another check fails in {other} ordered pair{'s' if other != 1 else ''}" if other else ""
        differing.append(text)
    identical = len(tables) - len(differing) - len(empty)
    parts = [f"{identical} suite{'s' if identical != 1 else ''} identical"]
    if empty:
        parts.append(f"{len(empty)} with fewer than two outputs")
    if differing:
        parts.append(f"{len(differing)} differ{'s' if len(differing) == 1 else ''}: " + "; ".join(differing))
    return f"{head}: " + ", ".join(parts)


# Fixed colour scale, so panels and figures compare: 1e-8 (a few float32 ulps of a logprob near 1) to 10.
_LOG_RANGE = (-8.0, 1.0)
_CELL_INCHES = 0.62
_DPI = 100
_MAX_WIDTH_INCHES = 16.0


def render_heatmap(tables: dict, path, short_title=lambda heading: heading) -> None:
    """Panels of N x N cells wrapped into a grid readable at 100 % zoom; colour = max |Δ logprob| (log scale,
    grey = bitwise identical), text = the cell's code (LEGEND) and max |Δ|; the colour bar marks each
    table's tolerance. A table without outputs is a panel saying so. ``path``: a file name or a binary file.
    Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import numpy as np

    panels = list(tables.items())
    largest = max((len(table["names"]) for _, table in panels), default=1)
    side = max(2.4, _CELL_INCHES * largest)
    label_room = 2.3  # y tick labels (full names) and the row title
    columns = max(1, min(len(panels), int(_MAX_WIDTH_INCHES // (side + label_room))))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * (side + label_room) + 1.2, rows * (side + 1.6) + 1.4),
                                squeeze=False, layout="constrained")
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = None
    for axis, (heading, table) in zip(axes.flat, panels):
        names = table["names"]
        title = short_title(heading)
        if names and table["missing"]:
            short = short_names(names + table["missing"])
            title += "\nno output: " + ", ".join(short[name] for name in table["missing"])
        axis.set_title(title, fontsize=10)
        if not names:
            note = "no output for any of\n" + "\n".join(table["missing"]) if table["missing"] else "nothing to show"
            axis.text(0.5, 0.5, note, ha="center", va="center", fontsize=9, wrap=True)
            axis.set_axis_off()
            continue
        cells = [[table["cells"][r][c] for c in names] for r in names]
        logs = [[math.log10(cell.max_abs_delta) if cell.max_abs_delta > 0 else math.nan for cell in row]
                for row in cells]
        values = np.ma.masked_invalid(np.array(logs))
        image = axis.imshow(values, cmap=colormap, vmin=_LOG_RANGE[0], vmax=_LOG_RANGE[1])
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                text = cell.code() if cell.max_abs_delta == 0 else f"{cell.code()}\n{short_number(cell.max_abs_delta)}"
                dark = cell.max_abs_delta > 0 and values[i, j] < -3
                axis.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
                if cell.same_class is False:  # across hardware classes: hatched, as the † in the text says
                    axis.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                                                edgecolor="#b2182b", linewidth=0))
        short = short_names(names)
        axis.set_xticks(range(len(names)), [short[name] for name in names], fontsize=8, rotation=45, ha="right",
                        rotation_mode="anchor")
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.set_xlabel("current", fontsize=9)
        axis.set_ylabel("golden", fontsize=9)
    used = list(axes.flat)[:len(panels)]
    for axis in list(axes.flat)[len(panels):]:
        axis.remove()
    if image is None:  # every panel is a note: a colour bar would explain nothing
        image = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(*_LOG_RANGE), colormap)
    bar = figure.colorbar(image, ax=used, shrink=min(1.0, 6 / (rows * (side + 1.6))), aspect=30)
    tolerances = sorted({table.get("tolerance") for _, table in panels} - {None})
    for tolerance in tolerances:
        if tolerance > 0:
            bar.ax.axhline(math.log10(tolerance), color="red", linewidth=2.5)
    marked = ", ".join(f"{t:g}" for t in tolerances if t > 0)
    marks = "grey: bitwise identical" + (f"; red line: tolerance {marked}" if marked else "")
    bar.set_label(f"log10 max |Δ logprob|\n{marks}", fontsize=9)
    note = "Cells: " + LEGEND + "; second line: max |Δ logprob|."
    figure.supxlabel(_wrap(note, int((columns * (side + label_room) + 1.2) * 13)), fontsize=9, ha="center")
    figure.savefig(path, dpi=_DPI, format="png", bbox_inches="tight", pad_inches=0.2)  # nothing clipped
    plt.close(figure)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def table_json(table: dict) -> dict:
    return {
        "names": table["names"],
        "missing": table["missing"],
        "files": {
            name: str(paths.shown_path(path)) for name, path in table.get("files", {}).items() if path is not None
        },
        "cells": {r: {c: cell.to_dict() for c, cell in cols.items()} for r, cols in table["cells"].items()},
        "tolerance": table.get("tolerance"),
        **({"hardware_classes": table["hardware_classes"]} if "hardware_classes" in table else {}),
    }
