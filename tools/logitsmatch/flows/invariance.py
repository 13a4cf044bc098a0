"""One suite at several parallel layouts or request schedules, N x N: the flow behind `logitsmatch invariance`.

The tasks plan the cells (layout x schedule) the suite's model can take, run each that has no
fresh result (``run.freshness``; ``forward`` after the rest), compare every ordered pair exactly
as `compare` and `matrix` do under one tolerance (``--abs-tol``, default ``INVARIANCE_ABS_TOL``),
write the table as Markdown, JSON and a heatmap PNG, and print the verdict.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, EXIT_RUN_FAILED, BadInput
from logitsmatch.files import folder_lock, output_folder, write_atomic
from logitsmatch.flows import execute
from logitsmatch.judge.policy import INVARIANCE_ABS_TOL
from logitsmatch.log import logger
from logitsmatch.run.freshness import NOT_SUPPORTED, ensure_fresh
from logitsmatch.run.plan import default_invariance_layouts

TOLERANCE_WHY = (
    "fp32 on one toolchain and one CPU: a layout changes only the order of floating-point reductions "
    "(tensor parallelism splits each GEMM's inner dimension and all-reduces the partial sums; pipeline stages "
    "and data-parallel engines compute each row as one rank would), which moves logprobs by a few 1e-6 at the "
    "583M shape. abs {abs_tol} is used here (the default, abs {default}, leaves more than an order of magnitude "
    "above that and is ten times tighter than Megatron's 1e-3, set for bf16 on GPUs); a layout that shards, routes, "
    "offsets or caches anything wrongly moves logprobs by 1e-2 or more, or changes tokens."
)

SCHEDULES_WHAT = (
    "Schedules (logitsmatch.schedules): together = every prompt added at once (the suite's own); alone = each "
    "prompt submitted after the previous finished, same engine; reversed = added at once in reverse order; mixed = "
    "interleaved with extra prompts of 3, 57 and 160 words (random.Random(20261203) over a fixed word list; only the "
    "suite's requests are written); chunked = chunked prefill at 64 tokens per step; forward = no engine: GPTModel's "
    "training forward over prompt + generated tokens (of the together result, else the golden), log-softmax "
    "gathered at each next token (its tokens are the reference's by construction: only its logprobs are compared). "
    "The same abs {abs_tol} holds for schedules: on one toolchain and one CPU a schedule changes which rows share each "
    "GEMM and attention call (the batch's shape and padding), which reorders fp32 reductions as a layout does "
    "(1 to 2 ulp, at most 9.5e-7, on the tiny suite); the forward differs from the engine by its attention kernel "
    "(megatron's unfused softmax with the training mask instead of paged attention) in the same last bits. A "
    "schedule that mixes up requests, positions or cached keys moves logprobs by 1e-2 or more."
)


def tolerance_why(abs_tol: float) -> str:
    """Why the table's tolerance, naming the one it used."""
    return TOLERANCE_WHY.format(abs_tol=f"{abs_tol:g}", default=f"{INVARIANCE_ABS_TOL:g}")


def schedules_what(abs_tol: float) -> str:
    """What each schedule does, and the tolerance the table holds them to."""
    return SCHEDULES_WHAT.format(abs_tol=f"{abs_tol:g}")


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


@dataclass
class InvarianceTable:
    """What the tasks of one invariance table have settled so far; each task fills in its part and hands it on."""

    project: Path
    toolchain: Any = None
    suite: Any = None
    metrics: list[str] = field(default_factory=list)
    policy: Any = None
    left_out: dict[str, str] = field(default_factory=dict)
    chosen: list[tuple[str, Any]] = field(default_factory=list)
    label: str = ""
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    table: dict = field(default_factory=dict)
    heading: str = ""
    what: str = "layout"


def resolve(state: InvarianceTable, args) -> InvarianceTable:
    """The toolchain, the suite, its policy (``--abs-tol``, not the suite's), the cells and the output folder."""
    from logitsmatch.judge.policy import REQUEST_METRICS, Policy
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    project = state.project
    state.toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    state.suite = suite = load_suite(project, args.suite)
    state.metrics = [metric for metric in suite.metrics if metric in REQUEST_METRICS]
    state.policy = Policy.from_args(args, metrics=state.metrics)
    if args.rerun and args.no_run:
        raise BadInput("--rerun and --no-run contradict each other")
    layouts_text = args.layouts
    if args.layouts is None and args.schedules is None:
        layouts_text, state.left_out = default_invariance_layouts(suite, project)
    for name, why in state.left_out.items():
        logger.info(f"layout {name} left out: {why}")
    state.chosen = plan_cells(suite, project, layouts_text, args.schedules, args.platform, args.batch_invariant)
    state.label = args.candidate or state.toolchain.name
    state.out = output_folder(args.out if args.out else paths.results_root() / "invariance" / suite.name / state.label)
    return state


def run_cells(state: InvarianceTable, args) -> InvarianceTable:
    """Each cell's fresh result, running those without one (unless --no-run); a cell that failed or that the
    release cannot run is named, not tabulated."""
    files = {}
    for name, platform in run_order(state.chosen):
        result, problem = ensure_fresh(
            lambda: sys.executable,
            state.project,
            state.suite,
            state.toolchain,
            platform,
            timeout=args.timeout,
            rerun=args.rerun,
            may_run=not args.no_run,
            batch_invariant=args.batch_invariant,
            candidate=args.candidate,
        )
        if problem and problem.startswith(NOT_SUPPORTED):
            state.unsupported[name] = problem
        elif problem:
            state.failed[name] = problem
        else:
            files[name] = result
    order = [name for name, _ in state.chosen]
    state.files = {name: files[name] for name in sorted(files, key=order.index)}
    return state


def tabulate(state: InvarianceTable, args) -> InvarianceTable:
    """Every ordered pair of the results compared under the policy, and how each run went."""
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.matrix import pairwise

    order = [name for name, _ in state.chosen]
    documents = {name: load_golden(path) for name, path in state.files.items()}
    shown = {name: paths.shown_path(path, state.project) for name, path in state.files.items()}
    missing = [f"{name} ({state.unsupported[name]})" if name in state.unsupported else name
               for name in order if name in state.failed or name in state.unsupported]
    state.table = {"names": list(documents), "missing": missing, "files": shown,
                   "cells": pairwise(documents, state.policy), "tolerance": state.policy.abs_tol}
    candidate = f", a candidate of {state.toolchain.name}" if args.candidate else ""
    state.heading = f"{state.suite.name} ({state.label}{candidate})"
    state.what = "layout" if args.schedules is None else "schedule" if args.layouts is None else "layout/schedule"
    return state


def publish(state: InvarianceTable, args) -> InvarianceTable:
    """invariance.json, invariance.md and (with matplotlib) invariance.png in the output folder; the table on the
    terminal."""
    from logitsmatch.judge import matrix
    from logitsmatch.judge.golden_io import write_json_atomic
    from logitsmatch.render import matrix as drawn

    suite, policy, what, table, out = state.suite, state.policy, state.what, state.table, state.out
    runs = {name: run_summary(read_provenance(path)) for name, path in state.files.items()}
    command = command_line(args, suite.name, policy.abs_tol)
    notes = [
        f"Same weights and prompts at each {what}, toolchain `{state.toolchain.name}`; every cell is "
        f"`logitsmatch compare` of the two results (row = golden side) with metrics {', '.join(state.metrics)} "
        f"and tolerance abs {policy.abs_tol:g} "
        "(rel 1e-9, no failure budget).",
        "",
        "Tolerance: " + tolerance_why(policy.abs_tol),
        "",
        *([schedules_what(policy.abs_tol), ""] if args.schedules else []),
        f"Made by: `{command}`",
        "",
        *(f"Left out of the default layouts: {name} ({why})." for name, why in state.left_out.items()),
        *([""] if state.left_out else []),
        f"| {what} | ranks | engines that served | wall s | max peak RSS per rank (MiB) | CPU |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {r['ranks']} | {r['engines_served']} | {r['wall_s']} | {r['peak_rss_mib_max']} | {r['cpu']} |"
          for name, r in runs.items()),
    ]
    document = {
        "suite": suite.name, "toolchain": state.toolchain.name, "policy": policy.to_dict(),
        "tolerance_why": tolerance_why(policy.abs_tol), "command": command, "runs": runs, "failed": state.failed,
        "left_out": state.left_out, "not_supported": state.unsupported,
        "table": matrix.table_json(table),
    }
    tables = {state.heading: table}
    markdown = drawn.render_markdown(tables, TITLES[what], notes, f"{what}s")
    image = io.BytesIO()
    try:  # without results the PNG is a panel naming the cells that failed
        drawn.render_heatmap(tables, image, lambda _: matrix.short_suite(suite.name))
        png = ", invariance.png"
    except ImportError:
        image, png = None, " (no PNG: matplotlib is not installed here; pip install 'logitsmatch[plot]')"
    with folder_lock(out, "writing an invariance table"):  # the three files are one table's
        write_json_atomic(out / "invariance.json", document)
        write_atomic(out / "invariance.md", markdown)
        if image is not None:
            write_atomic(out / "invariance.png", image.getvalue())
    print(drawn.render_terminal(tables, noun=f"{what}s"))
    logger.info(f"wrote {out}/invariance.md, invariance.json{png}")
    return state


def summarise(state: InvarianceTable, args) -> int:
    """The verdict line; exit 3 when a cell's run failed, else 1 when a pair is beyond tolerance, else 0."""
    what, table = state.what, state.table
    for name, why in state.unsupported.items():
        logger.warning(f"{what} {name}: {why}")
    for name, why in state.failed.items():
        logger.error(f"{what} {name}: {why}")
    cells = [cell for row in table["cells"].values() for cell in row.values()]
    worst = max((cell.max_abs_delta for cell in cells), default=0.0)
    most = max(cells, key=lambda cell: cell.n_moved, default=None)
    moved = f"; at most {most.n_moved} of {most.n_compared} logprobs moved in a pair" if most else ""
    if all(cell.passed for cell in cells) and len(table["names"]) >= 2:
        print(f"INVARIANT: {len(table['names'])} {what}s, every pair within tolerance: tokens equal, "
              f"max |delta logprob| {worst:.3g} <= {state.policy.abs_tol:g}{moved}")
    else:
        bad = sorted({f"{r}->{c}" for r, row in table["cells"].items() for c, cell in row.items() if not cell.passed})
        print(f"NOT INVARIANT: {len(bad)} of {len(cells)} ordered pairs beyond tolerance ({', '.join(bad[:8])}); "
              f"max |delta logprob| {worst:.3g}" if bad else f"NOT INVARIANT: fewer than two {what}s ran")
    if state.failed:
        return EXIT_RUN_FAILED
    return EXIT_OK if all(cell.passed for cell in cells) else EXIT_DRIFT


WORKFLOW = (resolve, run_cells, tabulate, publish, summarise)


def invariance(args) -> int:
    """Plan, run, tabulate, publish and judge one invariance table."""
    return execute(WORKFLOW, args, InvarianceTable(paths.project_root()))


TITLES = {"layout": "Parallelism invariance", "schedule": "Schedule invariance",
          "layout/schedule": "Layout and schedule invariance"}

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
    """A layout's result sidecar (``provenance.read_sidecar``); one that cannot be trusted says nothing."""
    from logitsmatch.provenance import read_sidecar

    try:
        return read_sidecar(paths.provenance_path(result))
    except BadInput:
        return {}
