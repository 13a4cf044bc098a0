"""`logitsmatch invariance SUITE`: the same weights and prompts at several parallel layouts, N x N.

Runs the suite once per layout (``logitsmatch run SUITE --layout L``; a fresh result is reused)
in this venv's toolchain, then compares every ordered pair of layouts exactly as `compare` and
`matrix` do: do the tokens agree (else the first divergence), the max |delta logprob|, how many
values are over the table's tolerance, and (MoE) whether every token went to the same experts.
Written as Markdown, JSON and a heatmap PNG, like the drift matrix.

The tolerance (``--abs-tol``, default 1e-4) is not the suite's. On one toolchain and one CPU
the layouts run the same fp32 arithmetic in a different order: tensor parallelism splits each
GEMM's inner dimension and all-reduces the partial sums, which moves logprobs by a few 1e-6 at
the 583M shape; pipeline stages and data-parallel engines compute each row as one rank would.
1e-4 leaves more than an order of magnitude above that reordering, and is ten times tighter
than Megatron's 1e-3 (set for bf16 on GPUs): a layout that shards, routes, offsets or caches
anything wrongly moves logprobs by 1e-2 or more, or changes tokens, and cannot pass.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, EXIT_RUN_FAILED, BadInput
from logitsmatch.files import output_folder, read_input, write_atomic
from logitsmatch.judge.policy import add_policy_options
from logitsmatch.log import logger
from logitsmatch.run.freshness import NOT_SUPPORTED, ensure_fresh
from logitsmatch.run.plan import DENSE_LAYOUTS, default_invariance_layouts
from logitsmatch.run.platforms import add_platform_option

EXAMPLE = ("logitsmatch invariance gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq "
           "--toolchain py3.11-torch2.13.0-mcore0.16.1 --layouts tp8,pp8,tp2pp2dp2,dp8,tp1")

INVARIANCE_ABS_TOL = 1e-4


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    parser.add_argument("--toolchain", metavar="NAME", required=True,
                        help="toolchain name from pyproject.toml (must match this venv to run)")
    parser.add_argument("--layouts", metavar="LIST", default=None,
                        help=f"comma-separated layouts (default: those of {DENSE_LAYOUTS} the suite's model can take, "
                             "for a MoE suite its own layout and tp1; the others are named)")
    add_platform_option(parser, "profile to run on")
    parser.add_argument("--schedules", metavar="LIST", default=None,
                        help="comma-separated request schedules (together, alone, reversed, mixed, chunked, forward); "
                        "with --layouts the table is their product (default: the suite's together schedule only)")
    parser.add_argument("--batch-invariant", action="store_true",
                        help="run with megatron-core's batch_invariant_mode where release and platform have it")
    parser.add_argument("--candidate", default=None, metavar="NAME",
                        help="this venv is a candidate derived from --toolchain (nox -s invariance -- --megatron-core "
                        "SPEC): its runs and table are labelled NAME")
    add_policy_options(parser, ("abs_tol",), abs_tol=INVARIANCE_ABS_TOL)
    parser.add_argument("--rerun", action="store_true", help="run every layout again, even with a fresh result")
    parser.add_argument("--no-run", action="store_true", help="only tabulate fresh results; run nothing")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline per run in seconds (default: the suite's)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: results/invariance/<suite>/<toolchain>)")


def plan_cells(suite, project: Path, layouts_text: str | None, schedules_text: str | None, platform_name: str | None,
               batch_invariant: bool = False) -> list[tuple[str, object]]:
    """[(name, platform)] for every layout x schedule named, in the order given; a cell is named by its layout,
    its schedule, or ``layout/schedule`` when both vary (the product)."""
    from logitsmatch import schedules

    if schedules_text is None:
        return [
            (layout.name, platform) for layout, platform in plan_layouts(suite, project, layouts_text, platform_name)
        ]
    names = schedules.parse(schedules_text)
    layouts = plan_layouts(suite, project, layouts_text, platform_name, minimum=1)
    if len(names) * len(layouts) < 2:
        raise BadInput("invariance needs at least two layouts or schedules")
    on = batch_invariant and layouts[0][1].device != "cpu"  # on CPU the run says why it is not applied
    return [(name if len(layouts) == 1 else layout.name if len(names) == 1 else f"{layout.name}/{name}",
             platform.configured(schedule=name, batch_invariant=on))
            for layout, platform in layouts for name in names]


def run_order(chosen: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """``forward`` after everything else: it scores its layout's ``together`` result, fresh when that ran first."""
    return sorted(chosen, key=lambda cell: cell[1].schedule == "forward")


def plan_layouts(suite, project: Path, text: str | None, platform_name: str | None, minimum: int = 2):
    """[(layout, platform)] for each named layout (None: the suite's own), checked against the suite's model."""
    from logitsmatch.layouts import of_suite, parse
    from logitsmatch.run.platforms import get_platform
    from logitsmatch.suites import load_architecture

    arch = load_architecture(project, suite.synthetic_model)
    if text is None:
        return [(of_suite(suite.model_args, suite.world_size, suite.name), get_platform(platform_name))]
    chosen, seen = [], set()
    for name in (part.strip() for part in text.split(",")):
        layout = parse(name)
        if layout.name in seen:
            raise BadInput(f"layout {name!r} is listed twice (as {layout.name})")
        seen.add(layout.name)
        layout.check(arch, f"suite {suite.name}")
        chosen.append((layout, get_platform(platform_name, layout=layout)))
    if len(chosen) < minimum:
        raise BadInput("invariance needs at least two layouts")
    return chosen


def run_summary(provenance: dict) -> dict:
    """What the Markdown and JSON say about how one layout's run went."""
    from logitsmatch import hardware

    memory = provenance.get("memory") or {}
    served = (provenance.get("network") or {}).get("served_by_dp_rank") or {}
    peaks = [value for value in memory.get("peak_rss_mib_per_rank") or [] if value is not None]
    return {
        "ranks": len(memory.get("peak_rss_mib_per_rank") or []),
        "engines_served": len(set(served.values())),
        "wall_s": round(float((provenance.get("timings_s") or {}).get("launch_wall", 0.0)), 1),
        "peak_rss_mib_max": max(peaks) if peaks else None,
        "date": provenance.get("date"),
        "cpu": hardware.describe(identity) if (identity := hardware.of_provenance(provenance)) else None,
    }


def main(args) -> int:
    from logitsmatch.judge import matrix
    from logitsmatch.judge.golden_io import load_golden, write_json_atomic
    from logitsmatch.judge.matrix import pairwise, table_json
    from logitsmatch.judge.policy import REQUEST_METRICS, Policy
    from logitsmatch.render.matrix import render_heatmap, render_markdown, render_terminal
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    project = paths.project_root()
    toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    suite = load_suite(project, args.suite)
    metrics = [metric for metric in suite.metrics if metric in REQUEST_METRICS]
    policy = Policy.from_args(args, metrics=metrics)
    if args.rerun and args.no_run:
        raise BadInput("--rerun and --no-run contradict each other")
    layouts_text, left_out = args.layouts, {}
    if args.layouts is None and args.schedules is None:
        layouts_text, left_out = default_invariance_layouts(suite, project)
    for name, why in left_out.items():
        logger.info(f"layout {name} left out: {why}")
    chosen = plan_cells(suite, project, layouts_text, args.schedules, args.platform, args.batch_invariant)
    label = args.candidate or toolchain.name
    out = output_folder(args.out if args.out else paths.results_root() / "invariance" / suite.name / label)

    files, failed, unsupported = {}, {}, {}
    for name, platform in run_order(chosen):
        result, problem = ensure_fresh(
            lambda: sys.executable,
            project,
            suite,
            toolchain,
            platform,
            timeout=args.timeout,
            rerun=args.rerun,
            may_run=not args.no_run,
            batch_invariant=args.batch_invariant,
            candidate=args.candidate,
        )
        if problem and problem.startswith(NOT_SUPPORTED):
            unsupported[name] = problem
        elif problem:
            failed[name] = problem
        else:
            files[name] = result
    order = [name for name, _ in chosen]
    files = {name: files[name] for name in sorted(files, key=order.index)}

    documents = {name: load_golden(path) for name, path in files.items()}
    shown = {name: paths.shown_path(path, project) for name, path in files.items()}
    missing = [f"{name} ({unsupported[name]})" if name in unsupported else name
               for name in order if name in failed or name in unsupported]
    table = {"names": list(documents), "missing": missing, "files": shown, "cells": pairwise(documents, policy),
             "tolerance": policy.abs_tol}
    runs = {name: run_summary(read_provenance(path)) for name, path in files.items()}

    heading = f"{suite.name} ({label}{f', a candidate of {toolchain.name}' if args.candidate else ''})"
    what = "layout" if args.schedules is None else "schedule" if args.layouts is None else "layout/schedule"
    notes = [
        f"Same weights and prompts at each {what}, toolchain `{toolchain.name}`; every cell is `logitsmatch compare` "
        f"of the two results (row = golden side) with metrics {', '.join(metrics)} "
        f"and tolerance abs {policy.abs_tol:g} "
        "(rel 1e-9, no failure budget).",
        "",
        "Tolerance: " + TOLERANCE_WHY,
        "",
        *([SCHEDULES_WHAT, ""] if args.schedules else []),
        f"Made by: `{command_line(args, suite.name, policy.abs_tol)}`",
        "",
        *(f"Left out of the default layouts: {name} ({why})." for name, why in left_out.items()),
        *([""] if left_out else []),
        f"| {what} | ranks | engines that served | wall s | max peak RSS per rank (MiB) | CPU |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {r['ranks']} | {r['engines_served']} | {r['wall_s']} | {r['peak_rss_mib_max']} | {r['cpu']} |"
          for name, r in runs.items()),
    ]
    write_json_atomic(out / "invariance.json", {
        "suite": suite.name, "toolchain": toolchain.name, "policy": policy.to_dict(), "tolerance_why": TOLERANCE_WHY,
        "command": command_line(args, suite.name, policy.abs_tol), "runs": runs, "failed": failed, "left_out": left_out,
        "not_supported": unsupported,
        "table": table_json(table),
    })
    write_atomic(out / "invariance.md", render_markdown({heading: table}, TITLES[what], notes, f"{what}s"))
    try:  # without results the PNG is a panel naming the cells that failed
        image = io.BytesIO()
        render_heatmap({heading: table}, image, lambda _: matrix.short_suite(suite.name))
        write_atomic(out / "invariance.png", image.getvalue())
        png = ", invariance.png"
    except ImportError:
        png = " (no PNG: matplotlib is not installed here; pip install 'logitsmatch[plot]')"
    print(render_terminal({heading: table}, noun=f"{what}s"))
    logger.info(f"wrote {out}/invariance.md, invariance.json{png}")
    for name, why in unsupported.items():
        logger.warning(f"{what} {name}: {why}")
    for name, why in failed.items():
        logger.error(f"{what} {name}: {why}")
    cells = [cell for row in table["cells"].values() for cell in row.values()]
    worst = max((cell.max_abs_delta for cell in cells), default=0.0)
    most = max(cells, key=lambda cell: cell.n_moved, default=None)
    moved = f"; at most {most.n_moved} of {most.n_compared} logprobs moved in a pair" if most else ""
    if all(cell.passed for cell in cells) and len(documents) >= 2:
        print(f"INVARIANT: {len(documents)} {what}s, every pair within tolerance: tokens equal, "
              f"max |delta logprob| {worst:.3g} <= {policy.abs_tol:g}{moved}")
    else:
        bad = sorted({f"{r}->{c}" for r, row in table["cells"].items() for c, cell in row.items() if not cell.passed})
        print(f"NOT INVARIANT: {len(bad)} of {len(cells)} ordered pairs beyond tolerance ({', '.join(bad[:8])}); "
              f"max |delta logprob| {worst:.3g}" if bad else f"NOT INVARIANT: fewer than two {what}s ran")
    if failed:
        return EXIT_RUN_FAILED
    return EXIT_OK if all(cell.passed for cell in cells) else EXIT_DRIFT


TOLERANCE_WHY = (
    "fp32 on one toolchain and one CPU: a layout changes only the order of floating-point reductions "
    "(tensor parallelism splits each GEMM's inner dimension and all-reduces the partial sums; pipeline stages "
    "and data-parallel engines compute each row as one rank would), which moves logprobs by a few 1e-6 at the "
    "583M shape. abs 1e-4 leaves more than an order of magnitude above that and is ten times tighter than "
    "Megatron's 1e-3 (set for bf16 on GPUs); a layout that shards, routes, offsets or caches anything wrongly "
    "moves logprobs by 1e-2 or more, or changes tokens."
)


TITLES = {"layout": "Parallelism invariance", "schedule": "Schedule invariance",
          "layout/schedule": "Layout and schedule invariance"}

SCHEDULES_WHAT = (
    "Schedules (logitsmatch.schedules): together = every prompt added at once (the suite's own); alone = each "
    "prompt submitted after the previous finished, same engine; reversed = added at once in reverse order; mixed = "
    "interleaved with extra prompts of 3, 57 and 160 words (random.Random(20261203) over a fixed word list; only the "
    "suite's requests are written); chunked = chunked prefill at 64 tokens per step; forward = no engine: GPTModel's "
    "training forward over prompt + generated tokens (of the together result, else the golden), log-softmax "
    "gathered at each next token (its tokens are the reference's by construction: only its logprobs are compared). "
    "The same abs 1e-4 holds for schedules: on one toolchain and one CPU a schedule changes which rows share each "
    "GEMM and attention call (the batch's shape and padding), which reorders fp32 reductions as a layout does "
    "(1 to 2 ulp, at most 9.5e-7, on the tiny suite); the forward differs from the engine by its attention kernel "
    "(megatron's unfused softmax with the training mask instead of paged attention) in the same last bits. A "
    "schedule that mixes up requests, positions or cached keys moves logprobs by 1e-2 or more."
)


def command_line(args, suite: str, abs_tol: float) -> str:
    """The command that makes this table (its options spelled out; --no-run and --out left aside)."""
    layouts = args.layouts or ""
    parts = ["logitsmatch", "invariance", suite, "--toolchain", args.toolchain]
    parts += ["--layouts", layouts] if layouts else []
    parts += ["--schedules", args.schedules] if args.schedules else []
    parts += ["--batch-invariant"] if args.batch_invariant else []
    parts += ["--candidate", args.candidate] if args.candidate else []
    parts += ["--abs-tol", f"{abs_tol:g}"] if abs_tol != INVARIANCE_ABS_TOL else []
    return " ".join(parts)


def read_provenance(result: Path) -> dict:
    import json

    try:
        return json.loads(read_input(paths.provenance_path(result)))
    except (BadInput, ValueError, RecursionError):
        return {}
