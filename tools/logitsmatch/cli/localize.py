"""`logitsmatch localize CAPTURE_A CAPTURE_B`: the first module whose output moved between two runs.

Each CAPTURE is the ``capture/`` folder a ``logitsmatch run ... --capture`` published beside its
result (or that result folder). The two are aligned by step, module name and order (``--align
steps``), or, for two runs that batch the requests differently (two schedules), row by row by
each row's prefix, the tokens of its request up to its own (``--align prefixes``); the report names
the first module whose real token rows differ bitwise on any rank and the first beyond the
tolerance, with a table of max |delta| per module and a PNG of it along the execution order.
What cannot be aligned (an output or rank on one side only, a shape or dtype mismatch) is named.
"""

from __future__ import annotations

import io
from pathlib import Path

from logitsmatch.errors import EXIT_DRIFT, EXIT_OK
from logitsmatch.files import refuse_output_over_inputs, write_atomic
from logitsmatch.judge.localize import DEFAULT_TOLERANCE
from logitsmatch.judge.policy import Policy, add_policy_options
from logitsmatch.log import logger

EXAMPLE = (
    "logitsmatch localize results/SUITE/cpu/A/capture results/SUITE/cpu/B/capture --png "
    "localize.png --json localize.json"
)


def configure(parser) -> None:
    parser.add_argument("a", help="capture folder of the first run")
    parser.add_argument("b", help="capture folder of the second run")
    add_policy_options(parser, ("abs_tol", "rel_tol"),
                       abs_tol=DEFAULT_TOLERANCE.abs_tol, rel_tol=DEFAULT_TOLERANCE.rel_tol)
    parser.add_argument("--align", choices=("steps", "prefixes"), default="steps",
                        help="steps: the two runs must hold the same tokens in each step (default); prefixes: compare "
                        "each row with the row of the same request prefix wherever the other run computed it (two "
                        "schedules; needs values and a capture of format 2)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the localization as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="write the per-module table as Markdown")
    parser.add_argument("--png", default=None, metavar="PATH", help="plot max |delta| along the execution order")


def main(args) -> int:
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.judge.localize import localize, read_capture
    from logitsmatch.judge.localize_prefix import localize_by_prefix
    from logitsmatch.render.localize import markdown, plot, terminal

    tolerance = Policy.from_args(args, mode=DEFAULT_TOLERANCE.mode, failure_budget=DEFAULT_TOLERANCE.failure_budget)
    captures = read_capture(args.a), read_capture(args.b)
    inputs = [path for capture in captures
              for path in (*capture.folder.iterdir(), capture.folder.parent / "inputs.json")]
    refuse_output_over_inputs([args.json, args.markdown, args.png], inputs)
    result = (localize_by_prefix if args.align == "prefixes" else localize)(*captures, tolerance)
    print(terminal(result))
    if args.json:
        write_json_atomic(Path(args.json), result.to_dict())
    if args.markdown:
        write_atomic(args.markdown, f"# Localization\n\n{result.summary()}\n\n{markdown(result)}\n")
    if args.png:
        png = io.BytesIO()
        try:
            plot(result, png)
        except ImportError:
            logger.warning(f"no plot written to {args.png}: matplotlib is not installed here")
        else:
            write_atomic(args.png, png.getvalue())
    return EXIT_DRIFT if result.first_bitwise is not None or result.schedule_problem else EXIT_OK
