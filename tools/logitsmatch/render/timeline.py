"""A watch's timeline (``timeline.png``): suites × commits of the range, what was run and what moved.

One row per suite (and per upstream finding), the range's commits left to right, oldest first: a grey dot where
the suite was run, a black cross where the commit could not run, a red diamond at each commit that moved the suite
(with its short hash), and a dashed line at each change across the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from logitsmatch.judge.matrix import short_suite


def plot(report: dict, target: Path | IO[bytes]) -> None:
    """Draw ``report`` (``watch.json``'s content) to ``target``, a path or a binary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {sha: index for index, sha in enumerate(report["order"])}
    rows = list(report["suites"]) + [f"finding {f['id']}" for f in report["findings"]]
    figure, axis = plt.subplots(figsize=(12, 2.2 + 0.5 * len(rows)))
    unrunnable = {u["commit"] for u in report["unrunnable"]}
    for y, row in enumerate(rows):
        tried = sorted({order[r["commit"]] for r in report["runs"] if _row_of(r, row, report) and r["commit"] in order
                        and "+" not in r["tree"]})
        axis.scatter(tried, [y] * len(tried), s=12, color="grey", zorder=2)
        broken = [order[sha] for sha in unrunnable if sha in order and order[sha] in tried]
        axis.scatter(broken, [y] * len(broken), marker="x", s=40, color="black", zorder=3)
    for change in report["changes"]:
        x = order[change["commit"]]
        axis.axvline(x, color="red", linewidth=0.6, linestyle="--", zorder=1)
        for suite in change["suites"]:
            axis.scatter([x], [rows.index(suite)], marker="D", s=50, color="red", zorder=4)
        axis.annotate(change["commit"][:10], (x, 1.02), xycoords=("data", "axes fraction"), fontsize=7,
                      rotation=90, va="bottom", ha="center", annotation_clip=False)
    for finding in report["findings"]:
        for flip in finding["changes"]:
            if flip["commit"] in order:
                axis.scatter([order[flip["commit"]]], [rows.index(f"finding {finding['id']}")], marker="*", s=90,
                             color="green", zorder=4)
    axis.set_yticks(range(len(rows)), [short_suite(row) for row in rows], fontsize=8)
    axis.set_ylim(-0.7, len(rows) - 0.3)
    axis.set_xlim(-1, report["commits"] + 1)
    axis.set_xlabel(f"first-parent commits of {report['range']} (0 = {report['first'][:10]}), oldest first")
    stopped = " (stopped early)" if report["stopped"] else ""
    axis.set_title(f"{report['package']}: {len(report['changes'])} change(s), {len(report['unrunnable'])} "
                   f"unrunnable commit(s) in {report['commits']} commits, every {report['every']}{stopped}; "
                   "red: a change, x: cannot run, green star: a finding's status flips", fontsize=9,
                   pad=55)  # room for the changes' hashes above the rows
    figure.tight_layout()
    figure.savefig(target, dpi=110, format="png")
    plt.close(figure)


def _row_of(run: dict, row: str, report: dict) -> bool:
    if not row.startswith("finding "):
        return run["suite"] == row
    finding = next(f for f in report["findings"] if f"finding {f['id']}" == row)
    return run["suite"] in finding["suite_keys"]
