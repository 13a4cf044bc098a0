"""The N x N drift table of toolchains, per suite: the flow behind `logitsmatch matrix`.

The tasks choose the toolchains (named, tagged, or all) and the baseline, tabulate each suite's
pairs (``judge.matrix``, each cell exactly `compare`'s verdict under the suite's policy), write
Markdown, JSON and a heatmap PNG, and judge the baseline's row.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import log, paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import folder_lock, output_folder, refuse_output_over_inputs, write_atomic
from logitsmatch.flows import execute
from logitsmatch.log import logger
from logitsmatch.run.platforms import harness_platform
from logitsmatch.toolchains import check_toolchain


@dataclass
class Selection:
    """The project, where the outputs are read from, the toolchains (in release order) and the baseline."""

    project: Path
    source: str
    names: list[str]
    baseline: str


def by_version(toolchain) -> tuple:
    """Sort key: megatron-core, then torch, then Python, each by its numeric release (0.9 before 0.10)."""
    return tuple(release(version) for version in (toolchain.megatron_core, toolchain.torch, toolchain.python))


def release(version: str) -> tuple[int, ...]:
    digits = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in digits.group().split(".")) if digits else ()


def command_line(args, out: Path) -> str:
    """The command that makes these tables, with the output folder as the project sees it."""
    parts = ["logitsmatch matrix"]
    parts += [f"--tag {tag}" for tag in args.tag or ()] + [f"--toolchain {name}" for name in args.toolchain or ()]
    parts += [f"--suite {name}" for name in args.suite or ()]
    parts += [f"--{key} {value}" for key, value in (("baseline", args.baseline), ("source", args.source)) if value]
    return " ".join(parts + [f"--out {paths.shown_path(out.absolute())}"])


def select(_, args) -> Selection:
    """The toolchains of the matrix (--toolchain and --tag, else all) in release order, and the baseline."""
    from logitsmatch.judge.matrix import check_source
    from logitsmatch.toolchains import default_toolchain_name, load_toolchains

    args.platform = harness_platform(args.platform)
    project = paths.project_root()
    source = check_source(args.source)
    known = load_toolchains(project / "pyproject.toml")
    tagged = [name for name, toolchain in known.items() if set(args.tag or ()) & set(toolchain.tags)]
    if args.tag and not tagged:
        raise BadInput(f"no toolchain has the tag {' or '.join(map(repr, args.tag))}")
    names = [check_toolchain(name, known) for name in dict.fromkeys((args.toolchain or []) + tagged)] or list(known)
    baseline = args.baseline or default_toolchain_name(project / "pyproject.toml")
    if baseline not in names:
        raise BadInput(f"baseline {baseline!r} is not among the toolchains of the matrix")
    return Selection(project, source, sorted(names, key=lambda name: by_version(known[name])), baseline)


def tabulate(selection: Selection, args) -> tuple[Selection, dict]:
    """One drift table per suite, each pair under the suite's own policy; nothing to tabulate is bad input."""
    from logitsmatch.judge.matrix import drift_matrix
    from logitsmatch.suites import load_suite, suite_names

    project, source = selection.project, selection.source
    tables = {}
    for suite_name in args.suite or suite_names(project):
        suite = load_suite(project, suite_name)
        tables[suite_name] = drift_matrix(
            suite, args.platform, selection.names, source, suite.policy,
            args.hardware_class
        )

    if not any(table["names"] for table in tables.values()):
        where = {"results": "results", "goldens": "goldens", "auto": "results or goldens"}.get(
            source, f"results in {source}")
        advice = "run them first" + ("" if source == "goldens" else ", or try --source goldens")
        platforms = golden_platforms(list(tables)) - {args.platform}
        if source != "results" and platforms:
            advice += f"; these suites have goldens on platform {', '.join(sorted(platforms))}"
        raise BadInput(f"nothing to tabulate: no {where} on platform {args.platform} for any of these toolchains "
                       f"and suites ({advice})")
    return selection, tables


def golden_platforms(suites: list[str]) -> set[str]:
    """The platforms the suites have goldens on (``golden_values_<platform>_<toolchain>.json``)."""
    import re

    named = re.compile(r"golden_values_(.+?)_py\d")
    folders = [paths.project_root() / "golden_values" / suite for suite in suites]
    return {match.group(1) for folder in folders for path in folder.glob("*.json") if (match := named.match(path.name))}


def publish(tabulated: tuple[Selection, dict], args) -> tuple[Selection, dict]:
    """matrix.json, matrix.md and (with matplotlib) matrix.png, never over the tables' own inputs."""
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.matrix import short_suite, table_json
    from logitsmatch.render.matrix import render_heatmap, render_markdown

    selection, tables = tabulated
    baseline = selection.baseline
    out = Path(args.out) if args.out else paths.results_root() / "matrix"
    outputs = [out / "matrix.json", out / "matrix.md", out / "matrix.png"]
    refuse_output_over_inputs(outputs, [path for table in tables.values() for path in table["files"].values()])
    output_folder(out)
    report = {}
    for suite, table in tables.items():
        entry = table_json(table)
        report[suite] = {"toolchains": entry.pop("names"), **entry}
    notes = [f"Made by: `{command_line(args, out)}`"]
    markdown = render_markdown(tables, f"Drift matrix (baseline {baseline})", notes, collapse=True)
    png = io.BytesIO()
    try:
        render_heatmap(tables, png, short_suite, collapse=True)
    except ImportError:
        logger.warning("no heatmap: matplotlib is not installed here (the Markdown and JSON tables are written)")
        png = None
    written = [out / "matrix.md", out / "matrix.json"] + ([out / "matrix.png"] if png else [])
    with folder_lock(out, "writing a matrix"):  # two matrices into one folder: the three files are one table's
        write_json_atomic(out / "matrix.json", {"baseline": baseline, "platform": args.platform, "suites": report})
        write_atomic(out / "matrix.md", markdown)
        if png:
            write_atomic(out / "matrix.png", png.getvalue())
    logger.info("wrote " + ", ".join(str(path) for path in written))
    return tabulated


def summarise(tabulated: tuple[Selection, dict], args) -> int:
    """The tables on the terminal (the summary line alone under -q); drift when the baseline's row moved."""
    from logitsmatch.render.matrix import render_terminal, summary_line

    selection, tables = tabulated
    baseline = selection.baseline
    print(summary_line(tables) if log.quiet() else render_terminal(tables, marked=baseline, collapse=True))
    drifted = [
        suite for suite, table in tables.items()
        if baseline in table["cells"] and not all(cell.passed for cell in table["cells"][baseline].values())
    ]
    return EXIT_DRIFT if drifted else EXIT_OK


WORKFLOW = (select, tabulate, publish, summarise)


def matrix(args) -> int:
    """Select, tabulate, publish and judge the drift matrix."""
    return execute(WORKFLOW, args)
