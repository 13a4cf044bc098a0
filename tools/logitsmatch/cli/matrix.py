"""`logitsmatch matrix`: the N x N drift table of toolchains, per suite.

Row = golden side, column = current side, each cell exactly `compare`'s
verdict for that pair: do tokens agree (else the first divergence), max
|delta logprob| over comparable positions, and how many values are over the
suite's tolerance. Written as Markdown, JSON and a heatmap PNG.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from logitsmatch import log, paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import output_folder, refuse_output_over_inputs, write_atomic
from logitsmatch.log import logger
from logitsmatch.run.platforms import add_platform_option, harness_platform

EXAMPLE = "logitsmatch matrix --baseline py3.11-torch2.13.0-mcore0.16.1 --out results/matrix"


def configure(parser) -> None:
    parser.add_argument("--toolchain", action="append", metavar="NAME", help="a toolchain to include, repeatable "
                        "(default: every toolchain, or those with a --tag)")
    parser.add_argument("--tag", action="append", metavar="TAG",
                        help="include the toolchains with this tag (pyproject.toml), repeatable, as nox's --tag")
    parser.add_argument("--suite", metavar="NAME", action="append", help="suites to include (default: all)")
    parser.add_argument("--baseline", metavar="NAME", default=None,
                        help="toolchain the exit code is judged against, marked * (default: the default toolchain)")
    add_platform_option(parser, "of the outputs")
    parser.add_argument("--source", default="auto", metavar="{auto,results,goldens,DIR}",
                        help="auto (results, else goldens), results, goldens, or a tree made by `logitsmatch collect`")
    parser.add_argument("--hardware-class", metavar="CLASS", default=None,
                        help="with --source DIR: the hardware class to tabulate when the tree holds several")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: results/matrix)")


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


def main(args) -> int:
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.matrix import check_source, drift_matrix, short_suite, table_json
    from logitsmatch.render.matrix import render_heatmap, render_markdown, render_terminal, summary_line
    from logitsmatch.suites import load_suite, suite_names
    from logitsmatch.toolchains import default_toolchain_name, load_toolchains

    args.platform = harness_platform(args.platform)
    project = paths.project_root()
    source = check_source(args.source)
    known = load_toolchains(project / "pyproject.toml")
    tagged = [name for name, toolchain in known.items() if set(args.tag or ()) & set(toolchain.tags)]
    if args.tag and not tagged:
        raise BadInput(f"no toolchain has the tag {' or '.join(map(repr, args.tag))}")
    names = list(dict.fromkeys((args.toolchain or []) + tagged)) or list(known)
    for name in names:
        if name not in known:
            raise BadInput(f"unknown toolchain {name!r} (known: {', '.join(known)})")
    baseline = args.baseline or default_toolchain_name(project / "pyproject.toml")
    if baseline not in names:
        raise BadInput(f"baseline {baseline!r} is not among the toolchains of the matrix")
    names = sorted(names, key=lambda name: by_version(known[name]))

    tables = {}
    for suite_name in args.suite or suite_names(project):
        suite = load_suite(project, suite_name)
        tables[suite_name] = drift_matrix(
            suite, args.platform, names, source, suite.policy, args.hardware_class
        )

    if not any(table["names"] for table in tables.values()):
        where = {"results": "results", "goldens": "goldens", "auto": "results or goldens"}.get(
            source, f"results in {source}")
        raise BadInput(f"nothing to tabulate: no {where} on platform {args.platform} for any of these toolchains "
                       "and suites (run them first, or try --source goldens)")
    out = Path(args.out) if args.out else paths.results_root() / "matrix"
    outputs = [out / "matrix.json", out / "matrix.md", out / "matrix.png"]
    refuse_output_over_inputs(outputs, [path for table in tables.values() for path in table["files"].values()])
    output_folder(out)
    report = {}
    for suite, table in tables.items():
        entry = table_json(table)
        report[suite] = {"toolchains": entry.pop("names"), **entry}
    write_json_atomic(out / "matrix.json", {"baseline": baseline, "platform": args.platform, "suites": report})
    notes = [f"Made by: `{command_line(args, out)}`"]
    write_atomic(out / "matrix.md", render_markdown(tables, f"Drift matrix (baseline {baseline})", notes))
    written = [out / "matrix.md", out / "matrix.json"]
    try:
        png = io.BytesIO()
        render_heatmap(tables, png, short_suite)
    except ImportError:
        logger.warning("no heatmap: matplotlib is not installed here (the Markdown and JSON tables are written)")
    else:
        write_atomic(out / "matrix.png", png.getvalue())
        written.append(out / "matrix.png")
    logger.info("wrote " + ", ".join(str(path) for path in written))
    print(summary_line(tables) if log.quiet() else render_terminal(tables, marked=baseline))  # summary line last
    drifted = [
        suite for suite, table in tables.items()
        if baseline in table["cells"] and not all(cell.passed for cell in table["cells"][baseline].values())
    ]
    return EXIT_DRIFT if drifted else EXIT_OK
