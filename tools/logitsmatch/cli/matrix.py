"""`logitsmatch matrix`: the N x N drift table of toolchains, per suite.

Row = golden side, column = current side, each cell exactly `compare`'s
verdict for that pair: do tokens agree (else the first divergence), max
|delta logprob| over comparable positions, and how many values are over the
suite's tolerance. Written as Markdown, JSON and a heatmap PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import output_folder, refuse_output_over_inputs, write_atomic
from logitsmatch.log import logger

EXAMPLE = "logitsmatch matrix --baseline py3.11-torch2.13.0-mcore0.16.1 --out results/matrix"


def configure(parser) -> None:
    parser.add_argument("--toolchain", action="append", help="toolchains to include (default: all)")
    parser.add_argument("--suite", action="append", help="suites to include (default: all)")
    parser.add_argument("--baseline", default=None, help="toolchain listed first; the verdict is judged against it")
    parser.add_argument("--platform", default="cpu")
    parser.add_argument("--source", default="auto", metavar="auto|results|goldens|DIR",
                        help="auto (results, else goldens), results, goldens, or a tree made by `logitsmatch collect`")
    parser.add_argument("--hardware-class", metavar="CLASS", default=None,
                        help="with --source DIR: the hardware class to tabulate when the tree holds several")
    parser.add_argument("--out", default=None, help="output folder (default: results/matrix)")


def main(args) -> int:
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.matrix import check_source, drift_matrix, render_heatmap, render_markdown, render_terminal, table_json
    from logitsmatch.judge.policy import Policy
    from logitsmatch.run.platforms import check_label
    from logitsmatch.suites import load_suite, suite_names
    from logitsmatch.toolchains import default_toolchain_name, load_toolchains

    check_label(args.platform)
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
        tables[suite_name] = drift_matrix(suite, args.platform, names, source, Policy.from_suite(suite.metrics, suite.comparison),
                                          args.hardware_class)

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
    write_atomic(out / "matrix.md", render_markdown(tables, f"Drift matrix (baseline {baseline})"))
    written = [out / "matrix.md", out / "matrix.json"]
    try:
        png = io.BytesIO()
        render_heatmap(tables, png, lambda suite: suite.replace("gpt_dynamic_inference_", ""))
    except ImportError:
        logger.warning("no heatmap: matplotlib is not installed here (the Markdown and JSON tables are written)")
    else:
        write_atomic(out / "matrix.png", png.getvalue())
        written.append(out / "matrix.png")
    print(render_terminal(tables))
    logger.info("wrote " + ", ".join(str(path) for path in written))
    drifted = [
        suite for suite, table in tables.items()
        if baseline in table["cells"] and not all(cell.passed for cell in table["cells"][baseline].values())
    ]
    return EXIT_DRIFT if drifted else EXIT_OK
