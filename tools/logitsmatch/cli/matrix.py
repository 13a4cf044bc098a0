"""`logitsmatch matrix`: the N x N drift table of toolchains, per suite.

Row = golden side, column = current side, each cell exactly `compare`'s
verdict for that pair: do tokens agree (else the first divergence), max
|delta logprob| over comparable positions, and how many values are over the
suite's tolerance. Written as Markdown, JSON and a heatmap PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.log import logger

EXAMPLE = "logitsmatch matrix --baseline py3.11-torch2.13.0-mcore0.16.1 --out results/matrix"


def configure(parser) -> None:
    parser.add_argument("--toolchain", action="append", help="toolchains to include (default: all)")
    parser.add_argument("--suite", action="append", help="suites to include (default: all)")
    parser.add_argument("--baseline", default=None, help="toolchain listed first; the verdict is judged against it")
    parser.add_argument("--platform", default="cpu")
    parser.add_argument("--source", default="auto", help="auto (results, else goldens), results or goldens")
    parser.add_argument("--out", default=None, help="output folder (default: results/matrix)")


def markdown(tables: dict, baseline: str) -> str:
    lines = [f"# Drift matrix (baseline {baseline})", ""]
    for suite, table in tables.items():
        names = table["toolchains"]
        lines += [f"## {suite}", "", "row = golden, column = current", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for row in names:
            lines.append(f"| **{row}** | " + " | ".join(table["cells"][row][col].label() for col in names) + " |")
        if table["missing"]:
            lines += ["", "No output for: " + ", ".join(table["missing"])]
        lines.append("")
    return "\n".join(lines)


def terminal(tables: dict) -> str:
    out = []
    for suite, table in tables.items():
        names = table["toolchains"]
        out.append(f"{suite}  (row = golden, column = current)")
        width = max(len(name) for name in names) if names else 0
        for row in names:
            for col in names:
                if row != col:
                    out.append(f"  {row:<{width}} -> {col:<{width}}  {table['cells'][row][col].label()}")
        if table["missing"]:
            out.append("  no output for: " + ", ".join(table["missing"]))
    return "\n".join(out)


def heatmap(tables: dict, path: Path) -> None:
    """One panel per suite; colour = log10 max |delta|, text = tokens and max |delta|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(suite, table) for suite, table in tables.items() if table["toolchains"]]
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for axis, (suite, table) in zip(axes[0], panels):
        names = table["toolchains"]
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
        axis.set_title(suite.replace("gpt_dynamic_inference_", ""), fontsize=9)
        figure.colorbar(image, ax=axis, label="log10 max |Δ logprob| (1e-12 = identical)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args) -> int:
    from logitsmatch.judge.compare import Policy
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.matrix import check_source, drift_matrix
    from logitsmatch.suites import load_suite, suite_names
    from logitsmatch.toolchains import default_toolchain_name, load_toolchains

    project = paths.project_root()
    source = check_source(args.source)
    known = load_toolchains(project / "pyproject.toml")
    names = args.toolchain or list(known)
    for name in names:
        if name not in known:
            raise BadInput(f"unknown toolchain {name!r} (known: {', '.join(known)})")
    baseline = args.baseline or default_toolchain_name(project / "pyproject.toml")
    if baseline not in names:
        raise BadInput(f"baseline {baseline!r} is not among the toolchains of the matrix")
    names = [baseline] + [name for name in names if name != baseline]

    tables = {}
    for suite_name in args.suite or suite_names(project):
        suite = load_suite(project, suite_name)
        tables[suite_name] = drift_matrix(suite, args.platform, names, source, Policy.from_suite(suite.metrics, suite.comparison))

    out = Path(args.out) if args.out else paths.results_root() / "matrix"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        suite: {
            "toolchains": table["toolchains"],
            "missing": table["missing"],
            "files": {name: str(path) for name, path in table["files"].items() if path is not None},
            "cells": {r: {c: cell.to_dict() for c, cell in cols.items()} for r, cols in table["cells"].items()},
        }
        for suite, table in tables.items()
    }
    write_json_atomic(out / "matrix.json", {"baseline": baseline, "platform": args.platform, "suites": report})
    (out / "matrix.md").write_text(markdown(tables, baseline))
    heatmap(tables, out / "matrix.png")
    print(terminal(tables))
    logger.info(f"wrote {out / 'matrix.md'}, {out / 'matrix.json'}, {out / 'matrix.png'}")
    drifted = [
        suite for suite, table in tables.items()
        if baseline in table["cells"] and not all(cell.passed for cell in table["cells"][baseline].values())
    ]
    return EXIT_DRIFT if drifted else EXIT_OK
