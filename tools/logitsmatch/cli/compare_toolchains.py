"""`logitsmatch compare-toolchains A B`: which logprobs and tokens moved from A to B.

A and B are toolchain names (their latest results, else their goldens) or
paths to golden-format files. Each suite is judged under its own policy and
reported in full; the exit code is 1 if any suite differs beyond policy.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch import log, paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import output_folder, refuse_output_over_inputs
from logitsmatch.run.platforms import add_platform_option, harness_platform

EXAMPLE = "logitsmatch compare-toolchains py3.11-torch2.13.0-mcore0.15.3 py3.11-torch2.13.0-mcore0.16.1 --out reports/"


def configure(parser) -> None:
    parser.add_argument("a", help="baseline: toolchain name or golden-format file")
    parser.add_argument("b", help="other: toolchain name or golden-format file")
    parser.add_argument("--suite", action="append", metavar="NAME",
                        help="suite(s) to compare (default: every suite both have)")
    add_platform_option(parser, "of the outputs")
    parser.add_argument("--source", default="auto", metavar="{auto,results,goldens}",
                        help="where each output is read: auto (results, else goldens), results or goldens")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for report.json / report.md / report.junit.xml per suite")


def main(args) -> int:
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.divergence import annotate, suite_decoder
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.matrix import check_source, locate
    from logitsmatch.judge.policy import Policy
    from logitsmatch.judge.report import render_terminal, verdict_line, write_reports
    from logitsmatch.suites import load_suite, suite_names
    from logitsmatch.toolchains import load_toolchains

    args.platform = harness_platform(args.platform)
    source = check_source(args.source)
    if Path(args.a).exists() and Path(args.b).exists():  # two files (a FIFO or folder is refused by load_golden)
        result = compare(load_golden(args.a), load_golden(args.b), Policy())
        print(render_terminal(result))
        return EXIT_OK if result.passed else EXIT_DRIFT

    project = paths.project_root()
    toolchains = load_toolchains(project / "pyproject.toml")
    for name in (args.a, args.b):
        if name not in toolchains:
            raise BadInput(f"{name!r} is neither a toolchain ({', '.join(toolchains)}) nor a file")
    suites = args.suite or suite_names(project)
    failed, compared, summary = [], 0, []
    for name in suites:
        suite = load_suite(project, name)
        files = [locate(name, args.platform, toolchain, source) for toolchain in (args.a, args.b)]
        if None in files:
            summary.append(f"  SKIP  {name}: no output for {args.a if files[0] is None else args.b}")
            continue
        golden, current = load_golden(files[0]), load_golden(files[1])
        result = compare(golden, current, suite.policy)
        annotate(result, golden, current, suite_decoder(suite, project))
        compared += 1
        summary.append(f"  {result.verdict.upper()}  {name}: " + verdict_line(result).split(": ", 1)[1].split(" [")[0])
        if not log.quiet():  # under -q the summary alone says it
            print(f"== {name}: {args.a} ({files[0].name}) -> {args.b} ({files[1].name})")
            print(render_terminal(result))
        if args.out:
            folder = output_folder(Path(args.out) / name)
            reports = [folder / "report.json", folder / "report.md", folder / "report.junit.xml"]
            refuse_output_over_inputs(reports, files)
            write_reports(result, *map(str, reports))
        if not result.passed:
            failed.append(name)
    if compared == 0:
        raise BadInput(f"no suite has outputs for both {args.a} and {args.b}")
    skipped = len(suites) - compared
    print(f"{args.a} -> {args.b}: {compared} suite{'s' if compared != 1 else ''} compared, "
          f"{compared - len(failed)} pass, {len(failed)} fail"
          + (f", {skipped} skipped (no output)" if skipped else ""))
    print("\n".join(summary))
    return EXIT_DRIFT if failed else EXIT_OK
