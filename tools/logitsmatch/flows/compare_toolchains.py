"""Which logprobs and tokens moved from one toolchain (or file) to another: the flow behind
`logitsmatch compare-toolchains`.

Two files are one comparison under the policy of the suite they are recognised as (else the
default); two toolchains are each suite's latest result (else golden) of one against the other's,
each suite under its own policy. A suite whose outputs moved is reported in full; the identical ones
share one line of the closing summary. Drift when any suite differs beyond its policy.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch import log, paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import output_folder, refuse_output_over_inputs
from logitsmatch.flows import execute
from logitsmatch.run.platforms import harness_platform


def compare_files(_, args) -> int | str:
    """Two golden-format files: one comparison under the policy of the suite they are recognised as (else the
    default); else the source the suites are read from."""
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.known_suite import one_suite, recognise
    from logitsmatch.judge.matrix import check_source
    from logitsmatch.judge.policy import Policy
    from logitsmatch.judge.report import render_terminal
    from logitsmatch.judge.verdict import run_dtype

    args.platform = harness_platform(args.platform)
    source = check_source(args.source)
    if Path(args.a).exists() and Path(args.b).exists():  # two files (a FIFO or folder is refused by load_golden)
        known = recognise([args.a, args.b], one_suite(args.suite))
        result = compare(load_golden(args.a), load_golden(args.b), known.policy or Policy(), run_dtype(args.a, args.b))
        result.metrics_origin = known.origin
        print(render_terminal(result))
        return EXIT_OK if result.passed else EXIT_DRIFT
    return source


def compare_suites(source: str, args) -> int:
    """Two toolchains: every suite both have outputs for, each under its own policy, then the summary."""
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.divergence import annotate, suite_decoder
    from logitsmatch.judge.figures import plural
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.matrix import locate, short_suite
    from logitsmatch.judge.report import render_terminal, verdict_line, write_reports
    from logitsmatch.judge.verdict import run_dtype
    from logitsmatch.suites import load_suite, suite_names
    from logitsmatch.toolchains import load_toolchains

    project = paths.project_root()
    toolchains = load_toolchains(project / "pyproject.toml")
    for name in (args.a, args.b):
        if name not in toolchains:
            raise BadInput(f"{name!r} is neither a toolchain ({', '.join(toolchains)}) nor a file")
    suites = args.suite or suite_names(project)
    failed, compared, summary, identical = [], 0, [], []
    for name in suites:
        suite = load_suite(project, name)
        files = [locate(name, args.platform, toolchain, source) for toolchain in (args.a, args.b)]
        if None in files:
            summary.append(f"  SKIP  {name}: no output for {args.a if files[0] is None else args.b}")
            continue
        golden, current = load_golden(files[0]), load_golden(files[1])
        result = compare(golden, current, suite.policy, run_dtype(*files))
        result.metrics_origin = f"suite {name}'s METRICS"
        annotate(result, golden, current, suite_decoder(suite, project))
        compared += 1
        if result.passed and result.tokens_agree and not result.n_moved:  # one summary line for all of these
            identical.append(short_suite(name))
        else:
            summary.append(f"  {result.verdict.upper()}  {name}: "
                           + verdict_line(result).split(": ", 1)[1].split(" [")[0])
            if not log.quiet():  # the tables of a suite that moved; under -q the summary alone says it
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
    if identical:
        summary.insert(0, f"  PASS  {plural(len(identical), 'suite')} identical (every "
                       f"compared logprob and token equal to the last bit): {', '.join(identical)}")
    print("\n".join(summary))
    return EXIT_DRIFT if failed else EXIT_OK


WORKFLOW = (compare_files, compare_suites)


def compare_toolchains(args) -> int:
    """Compare two files, else two toolchains suite by suite."""
    return execute(WORKFLOW, args)
