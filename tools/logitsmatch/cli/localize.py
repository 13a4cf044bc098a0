"""`logitsmatch localize CAPTURE_A CAPTURE_B`: the first module whose output moved between two runs.

Each CAPTURE is the ``capture/`` folder a ``logitsmatch run ... --capture`` published beside its
result (or that result folder). The two are aligned by module name and order; the report names
the first module whose real token rows differ bitwise on any rank and the first beyond the
tolerance, with a table of max |delta| per module and a PNG of it along the execution order.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch.errors import EXIT_DRIFT, EXIT_OK
from logitsmatch.judge.localize import DEFAULT_TOLERANCE
from logitsmatch.judge.policy import Policy, add_policy_options

EXAMPLE = "logitsmatch localize results/SUITE/cpu/A/capture results/SUITE/cpu/B/capture --png localize.png --json localize.json"


def configure(parser) -> None:
    parser.add_argument("a", help="capture folder of the first run")
    parser.add_argument("b", help="capture folder of the second run")
    add_policy_options(parser, ("abs_tol", "rel_tol"),
                       abs_tol=DEFAULT_TOLERANCE.abs_tol, rel_tol=DEFAULT_TOLERANCE.rel_tol)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the localization as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the per-module table as Markdown")
    parser.add_argument("--png", default=None, metavar="PATH", help="plot max |delta| along the execution order")


def main(args) -> int:
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.localize import localize, markdown, plot, read_capture, terminal

    tolerance = Policy.from_args(args, mode=DEFAULT_TOLERANCE.mode, failure_budget=DEFAULT_TOLERANCE.failure_budget)
    result = localize(read_capture(args.a), read_capture(args.b), tolerance)
    print(terminal(result))
    if args.json:
        write_json_atomic(Path(args.json), result.to_dict())
    if args.markdown:
        Path(args.markdown).write_text(f"# Localization\n\n{result.summary()}\n\n{markdown(result)}\n")
    if args.png:
        plot(result, Path(args.png))
    return EXIT_DRIFT if result.first_bitwise is not None or result.schedule_problem else EXIT_OK
