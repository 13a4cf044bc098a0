"""A drift or invariance table for people: the terminal and Markdown grids, the summary line and the heatmap PNG.

A table is ``{"names", "cells", "missing"}`` as ``judge.matrix`` builds it; every cell is already decided there.
With ``collapse``, a table whose cells are all ``=`` is not drawn as a grid (or a grey panel): it is one line
beside the summary, naming the suite, how many outputs agree and why the others have none.
"""

from __future__ import annotations

import math

from logitsmatch.judge.figures import plural, short_number, ulps_text
from logitsmatch.judge.matrix import LEGEND, missing_text, short_suite


def short_names(names: list[str]) -> dict[str, str]:
    """Each name's last dash-separated part when those parts tell the names apart (mcore0.16.1), else the name."""
    last = [name.rsplit("-", 1)[-1] for name in names]
    if len(set(last)) == len(last):
        return dict(zip(names, last))
    return {name: name for name in names}


def all_equal(table: dict) -> bool:
    """Whether a table has two or more outputs and every cell is ``=`` (one group of identical outputs)."""
    return len(table["names"]) >= 2 and len(identical_groups(table)) == 1


def _split(tables: dict, collapse: bool) -> tuple[dict, dict]:
    """The tables drawn in full, and (with ``collapse``) the all-``=`` ones that are a line each."""
    collapsed = {heading: table for heading, table in tables.items() if collapse and all_equal(table)}
    return {heading: table for heading, table in tables.items() if heading not in collapsed}, collapsed


def _collapsed_line(table: dict, noun: str) -> str:
    """"8 toolchains, all =; no output for 4 toolchains: ..." for one all-``=`` table."""
    singular = noun.removesuffix("s")
    crossing = any(cell.same_class is False for row in table["cells"].values() for cell in row.values())
    line = f"{plural(len(table['names']), singular)}, all =" + ("† (hardware classes differ)" if crossing else "")
    return line + (f"; {missing_text(table, singular)}" if table["missing"] else "")


def render_markdown(tables: dict, title: str, notes: list[str] | None = None, noun: str = "toolchains",
                    collapse: bool = False) -> str:
    """One section per table: an N x N Markdown grid of cell labels (row = golden, column = current); with
    ``collapse`` the all-``=`` tables are one row each of a table after the summary."""
    drawn, collapsed = _split(tables, collapse)
    lines = [f"# {title}", "", *(notes or [])]
    if notes:
        lines.append("")
    lines += [f"Cells: {LEGEND}.", "", summary_line(tables, noun), ""]
    if collapsed:
        lines += [f"Identical throughout (every cell =, no grid drawn): {len(collapsed)} of {len(tables)}", "",
                  "| suite | outputs |", "|---|---|"]
        lines += [f"| {heading} | {_collapsed_line(table, noun)} |" for heading, table in collapsed.items()]
        lines.append("")
    singular = noun.removesuffix("s")
    for heading, table in drawn.items():
        names = table["names"]
        lines += [f"## {heading}", ""]
        if names:
            lines.append("| | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for row in names:
                lines.append(f"| **{row}** | " + " | ".join(table["cells"][row][col].label() for col in names) + " |")
        if table["missing"]:
            text = missing_text(table, singular)
            lines += ["", text[0].upper() + text[1:]]
        lines.append("")
    return "\n".join(lines)


def render_terminal(tables: dict, marked: str | None = None, noun: str = "toolchains", collapse: bool = False) -> str:
    """One grid per table (columns numbered as the rows), the legend, and the closing summary line; with
    ``collapse`` the all-``=`` tables are one line each, just before the summary."""
    drawn, collapsed = _split(tables, collapse)
    singular = noun.removesuffix("s")
    out = [f"cells: {LEGEND}" + ("; * baseline" if marked else "")]
    for heading, table in drawn.items():
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
            out.append("  " + missing_text(table, singular))
    if collapsed:
        out += ["", f"identical throughout (every cell =, no grid drawn): {len(collapsed)} of {len(tables)}"]
        width = max(len(short_suite(heading)) for heading in collapsed)
        out += [f"  {short_suite(heading).ljust(width)}  {_collapsed_line(table, noun)}"
                for heading, table in collapsed.items()]
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
        widest = max(cells, key=lambda cell: cell.max_ulps)
        diverged = sum(not cell.tokens_agree for cell in cells)
        text = f"{short_suite(heading)} " + "↔".join(_group_text(group, short) for group in groups)
        text += f", {plural(moved, 'value')}"
        if moved:
            text += f", max {short_number(worst)} ({ulps_text(widest.max_ulps, widest.ulp_width)})"
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


def render_heatmap(tables: dict, path, short_title=lambda heading: heading, collapse: bool = False) -> None:
    """Panels of N x N cells wrapped into a grid readable at 100 % zoom; colour = max |Δ logprob| (log scale,
    grey = bitwise identical), text = the cell's code (LEGEND) and max |Δ|; the colour bar marks each
    table's tolerance. A table without outputs is a panel saying so; with ``collapse`` an all-``=`` table is
    no panel, only a name in the figure's note. ``path``: a file name or a binary file. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import numpy as np

    drawn, collapsed = _split(tables, collapse)
    if collapsed and not drawn:  # nothing but grey: the note alone is the figure
        drawn = {"every table is identical throughout": {"names": [], "missing": [], "cells": {}}}
    panels = list(drawn.items())
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
            title += "\n" + _wrap(missing_text(table, "toolchain"), int((side + label_room) * 11))
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
                if not cell.passed:  # a failing pair is framed in red, whatever its colour says
                    axis.add_patch(matplotlib.patches.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                                                edgecolor="#d7191c", linewidth=2.5))
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
    note = "Cells: " + LEGEND + "; second line: max |Δ logprob|; red frame: the pair fails."
    if collapsed:
        note += ("\nIdentical throughout (every cell =, no panel drawn): "
                 + ", ".join(short_title(heading) for heading in collapsed))
    figure.supxlabel(_wrap(note, int((columns * (side + label_room) + 1.2) * 13)), fontsize=9, ha="center")
    figure.savefig(path, dpi=_DPI, format="png", bbox_inches="tight", pad_inches=0.2)  # nothing clipped
    plt.close(figure)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())
