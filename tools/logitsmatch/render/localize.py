"""A localization for people: the terminal text, the Markdown table and the PNG plot of ``judge.localize``'s result.

The deciding (alignment, the first moving module, tolerances) is judge's; this module only draws what it decided.
"""

from __future__ import annotations

import math

from logitsmatch.judge.figures import short_number
from logitsmatch.judge.localize import Localization, describe, step_kind


def unaligned(result: Localization, limit: int = 12) -> list[str]:
    """What could not be aligned or compared value by value, for every renderer."""
    lines = []
    if result.missing:
        more = f" ... and {len(result.missing) - limit} more" if len(result.missing) > limit else ""
        lines.append(f"not aligned, {len(result.missing)} on one side only: "
                     + "; ".join(result.missing[:limit]) + more)
    mismatched = result.mismatched
    if mismatched:
        more = f" ... and {len(mismatched) - limit} more" if len(mismatched) > limit else ""
        lines.append(f"not comparable value by value, {len(mismatched)} output(s): " + "; ".join(
            f"{row.name}#{row.output} ({step_kind(row.step)}): {row.mismatch}" for row in mismatched[:limit]) + more)
    return lines


def terminal(result: Localization, limit: int = 12) -> str:
    lines = []
    if result.weights_differing:
        shown = ", ".join(result.weights_differing[:4]) + (" ..." if len(result.weights_differing) > 4 else "")
        lines.append(f"loaded weights differ in {len(result.weights_differing)} tensor(s): {shown}")
    lines.append(result.summary())
    lines += unaligned(result, limit)
    if result.schedule_problem:
        return "\n".join(lines)
    beyond = result.first_beyond_tolerance
    tol = result.tolerance
    lines.append("first beyond tolerance (abs {:g}, rel {:g}): {}".format(
        tol.abs_tol, tol.rel_tol, describe(beyond) if beyond else "none"))
    moved = [row for row in result.rows if row.differs]
    if moved:
        lines.append(f"{len(moved)} of {len(result.rows)} module outputs differ; the first {min(limit, len(moved))}:")
        lines.append(f"  {'step':<9} {'module':<58} {'ranks':>7} {'max |Δ|':>10}")
        for row in moved[:limit]:
            delta = "-" if row.max_abs_delta is None else short_number(row.max_abs_delta)
            name = row.name + ("[in]" if row.output == "in0" else (f"#{row.output}" if row.output != "0" else ""))
            lines.append(
                f"  {step_kind(row.step):<9} {name:<58} {row.ranks_differing:>3}/{row.ranks_compared:<3} {delta:>10}"
                + (f"  {row.rows_note}" if row.rows_note else "")
            )
    return "\n".join(lines)


def markdown(result: Localization) -> str:
    lines = [f"- {line}" for line in unaligned(result, limit=len(result.missing) + len(result.rows))]
    lines += [""] if lines else []
    by_prefix = any(row.rows_note for row in result.rows)
    lines += ["| # | step | module | output | shape (real rows) | ranks differing | max abs delta | beyond tolerance |"
              " not comparable |" + (" rows (aligned by prefix) |" if by_prefix else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if by_prefix else "")]
    for index, row in enumerate(result.rows):
        delta = "-" if row.max_abs_delta is None else short_number(row.max_abs_delta)
        mark = "**" if row is result.first_bitwise else ""
        lines.append(f"| {index} | {step_kind(row.step)} | {mark}{row.name}{mark} | {row.output} | {row.shape} | "
                     f"{row.ranks_differing}/{row.ranks_compared} | {delta} | "
                     f"{'yes' if row.beyond_tolerance else ''} | {row.mismatch or ''} |"
                     + (f" {row.rows_note or ''} |" if by_prefix else ""))
    return "\n".join(lines)


def empty_plot_note(result: Localization, deltas: list[float]) -> str:
    """Why the plot shows no curve (or a flat one), in words; "" when the curve says it."""
    if result.schedule_problem:
        return f"Nothing to plot: the captures are not comparable.\n{result.schedule_problem}"
    if not result.rows:
        missing = f" ({len(result.missing)} records only one side has)" if result.missing else ""
        return f"Nothing to plot: the two captures share no module output{missing}."
    if all(math.isnan(d) for d in deltas) and result.mismatched:
        return (
            f"Nothing to plot: {len(result.mismatched)} of the {len(result.rows)} outputs both captures have differ "
            "in shape or dtype, and no other has values on both sides."
        )
    if all(math.isnan(d) for d in deltas):
        return "Nothing to plot: no module output has values on both sides (digests only)."
    if result.first_bitwise is None:
        return f"Flat at the floor: all {len(result.rows)} module outputs are bitwise equal."
    return ""


def plot(result: Localization, path, title: str = "") -> None:
    """max |Δ| per module output along the execution order (log scale); 0 drawn at the floor. ``path``: a file name
    or a binary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-12
    deltas = [row.max_abs_delta if row.max_abs_delta is not None else math.nan for row in result.rows]
    shown = [max(d, floor) if not math.isnan(d) else math.nan for d in deltas]
    figure, axis = plt.subplots(figsize=(12, 4.5))
    axis.plot(range(len(shown)), shown, marker=".", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_ylim(floor / 2, max([d for d in shown if not math.isnan(d)] + [1e-6]) * 5)
    by_prefix = any(row.rows_note for row in result.rows)
    for index, row in enumerate(result.rows):
        if index and row.step != result.rows[index - 1].step and not by_prefix:
            axis.axvline(index - 0.5, color="grey", linewidth=0.6, linestyle="--")
            axis.text(index, floor, f" {step_kind(row.step)}", fontsize=7, va="bottom")
    first = result.first_bitwise
    if first is not None:
        index = result.rows.index(first)
        axis.annotate(f"first moving: {first.name}", (index, shown[index] if not math.isnan(shown[index]) else floor),
                      xytext=(10, 20), textcoords="offset points", fontsize=8, arrowprops={"arrowstyle": "->"})
    note = empty_plot_note(result, deltas)
    if note:
        import textwrap

        text = "\n".join(textwrap.fill(line, 110) for line in note.splitlines())
        axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center", fontsize=10,
                  bbox={"facecolor": "white", "edgecolor": "grey"})
    if not result.rows:
        axis.set_xticks([])
    axis.set_xlabel("module output, execution order within a step (rows aligned by request prefix)" if by_prefix
                    else "module output, execution order (prefill, then decode steps)")
    axis.set_ylabel("max |Δ| on value ranks (1e-12 = equal)")
    axis.set_title(title or result.summary(), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
