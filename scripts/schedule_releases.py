"""Schedule invariance and train/inference parity of the tiny seed sibling over every release toolchain.

    python scripts/schedule_releases.py [--tag releases] [--layout tp2] [--schedules ...] --out DIR [--no-run]

For each toolchain with the tag, ``nox -s invariance -- SUITE --toolchain T --layouts LAYOUT --schedules ...
--out DIR/T`` (its venv, its fresh results reused), then one row per release in ``DIR/releases.md`` and
``DIR/releases.json``: do the engine's schedules agree (bitwise, or within the invariance tolerance), does chunked
prefill agree, and does the training forward equal the engine. Every figure is read from the per-release
``invariance.json``; a release whose invariance run failed is a row saying so, never a guess. ``--no-run`` runs
nothing: it tabulates the per-release tables already in DIR again (after a change of this summary's wording),
keeping the command that made them.

At TP2 by default: two ranks per run instead of eight, so that 12 releases x 6 schedules fit a 2-core host, with
the weights sharded as tensor parallelism shards them. Two ranks cannot show what makes the schedules part at the
suite's own TP8 on the default toolchain (docs/invariance/schedules.md: the all-reduce in layer 0's linear_proj):
a sum of two partial results is the same in either order. That question is answered at TP8 on the default
toolchain (docs/invariance/schedules/tiny.md); this table answers, per release, whether anything else in the engine
depends on the batch, whether chunked prefill is right, and whether the engine equals the training forward.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch import schedules  # noqa: E402
from logitsmatch.files import write_atomic  # noqa: E402
from logitsmatch.judge.golden_io import write_json_atomic  # noqa: E402
from logitsmatch.paths import shown_path  # noqa: E402
from logitsmatch.toolchains import load_toolchains  # noqa: E402

TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
ENGINE = ("together", "alone", "reversed", "mixed")  # the engine without chunking: the batch-dependence question


def version_key(name: str) -> tuple:
    """Toolchains in megatron-core version order."""
    toolchain = load_toolchains(PROJECT / "pyproject.toml")[name]
    return tuple(int(part) for part in toolchain.megatron_core.split(".")[:3])


def worst(cells: list[dict]) -> dict | None:
    """The pair with the largest |delta| among ``cells`` (None when there is none), with how many moved."""
    if not cells:
        return None
    top = max(cells, key=lambda cell: (cell["max_abs_delta"] or 0.0))
    return {"max_abs_delta": top["max_abs_delta"], "max_ulps": top["max_ulps"],
            "n_moved_max": max(cell["n_moved"] for cell in cells), "n_compared": top["n_compared"],
            "n_over_max": max(cell["n_over_tolerance"] for cell in cells),
            "tokens_agree": all(cell["tokens_agree"] for cell in cells),
            "passed": all(cell["passed"] for cell in cells)}


def summarize(report: dict) -> dict:
    """One release's answers from its invariance report."""
    cells, names = report["table"]["cells"], report["table"]["names"]
    engine = [name for name in ENGINE if name in names]
    pairs = [cells[a][b] for i, a in enumerate(engine) for b in engine[i + 1:]]
    against = {name: cells["together"][name] for name in ("chunked", "forward")
               if name in names and "together" in names}
    return {
        "engine_schedules": engine,
        "engine": worst(pairs),
        "chunked": worst([against["chunked"]]) if "chunked" in against else None,
        "forward": worst([against["forward"]]) if "forward" in against else None,
        "not_supported": report["not_supported"],
        "failed": report["failed"],
        "wall_s": {name: run["wall_s"] for name, run in report["runs"].items()},
        "peak_rss_mib_max": {name: run["peak_rss_mib_max"] for name, run in report["runs"].items()},
    }


def cell_text(answer: dict | None, why_missing: str = "") -> str:
    if answer is None:
        return why_missing or "–"
    if answer["max_abs_delta"] == 0 and answer["tokens_agree"]:
        return "bitwise"
    tokens = "tokens =" if answer["tokens_agree"] else "**tokens differ**"
    verdict = "within 1e-4" if answer["passed"] else "**over 1e-4**"
    ulps = f", {answer['max_ulps']} ulp" if answer["max_ulps"] is not None else ""
    moved = f"{answer['n_moved_max']} of {answer['n_compared']} moved"
    over, within = answer["n_over_max"], answer["n_moved_max"] - answer["n_over_max"]
    if over and within:  # a few values far over and the rest within: say both, the max speaks for the few
        return (f"{tokens}, {moved}: {over} **over 1e-4** (max {answer['max_abs_delta']:.2g}{ulps}), "
                f"{within} within it")
    return f"{tokens}, {moved}, max {answer['max_abs_delta']:.2g}{ulps}, {verdict}"


def markdown(rows: dict[str, dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Schedule invariance and train/inference parity over the releases",
        "",
        f"Suite `{args.suite}` at layout {args.layout}, schedules {', '.join(args.schedules)}; per release the "
        "invariance table of `nox -s invariance` (abs 1e-4, row = golden side) in `<toolchain>/invariance.md`.",
        "",
        "- **engine**: the largest difference between any two of the engine's unchunked schedules "
        f"({', '.join(ENGINE)}): does a request's answer depend on its batch?",
        "- **chunked**: chunked prefill at 64 tokens per step against `together`.",
        "- **forward**: megatron-core's training forward (`GPTModel`, no KV cache) against `together`: "
        "are the engine's logprobs the training forward's?",
        "",
        f"Made by: `{command}`",
        "",
        "| toolchain | engine | chunked | forward | wall s (all schedules) |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | run failed: {row['error']} | | | |")
            continue
        chunked_missing = row["not_supported"].get("chunked", "") or row["failed"].get("chunked", "")
        lines.append(
            f"| {name} | {cell_text(row['engine'])} | "
            f"{cell_text(row['chunked'], chunked_missing.split(':', 1)[-1].strip()[:80])} | "
            f"{cell_text(row['forward'], row['failed'].get('forward', ''))} | "
            f"{sum(row['wall_s'].values()):.0f} |")
    return "\n".join(lines) + "\n"


def tabulate_again(args: argparse.Namespace, toolchains: list[str]) -> int:
    """``--no-run``: the summary of the per-release tables in ``args.out``, under the command that made them (a
    release without a table keeps its row of the last summary, e.g. the error its run ended with)."""
    before = json.loads((args.out / "releases.json").read_text())
    rows = {}
    for name in toolchains:
        report_path = args.out / name / "invariance.json"
        if report_path.is_file():
            rows[name] = summarize(json.loads(report_path.read_text()))
        else:
            rows[name] = before["releases"].get(name, {"error": f"no table in {shown_path(report_path)}"})
    write_json_atomic(args.out / "releases.json", {**before, "releases": rows})
    write_atomic(args.out / "releases.md", markdown(rows, args, before["command"]))
    print(markdown(rows, args, before["command"]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="releases", help="toolchains with this tag (default: releases)")
    parser.add_argument("--suite", default=TINY, help=f"the suite (default: {TINY})")
    parser.add_argument("--layout", default="tp2", help="the one layout every schedule runs at (default: tp2)")
    parser.add_argument("--schedules", default=",".join(schedules.SCHEDULES), type=lambda text: text.split(","),
                        help="comma-separated schedules (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="folder for each release's table and the summary")
    parser.add_argument("--no-run", action="store_true",
                        help="run nothing: tabulate the per-release tables already in --out again")
    args = parser.parse_args()

    toolchains = sorted((name for name, toolchain in load_toolchains(PROJECT / "pyproject.toml").items()
                         if args.tag in toolchain.tags), key=version_key)
    if not toolchains:
        print(f"schedule_releases: no toolchain has the tag {args.tag!r}", file=sys.stderr)
        return 2
    if args.no_run:
        return tabulate_again(args, toolchains)
    rows = {}
    for name in toolchains:
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "nox", "-s", "invariance", "--", args.suite, "--toolchain", name,
             "--layouts", args.layout, "--schedules", ",".join(args.schedules), "--out", str(args.out / name)],
            cwd=PROJECT, env=os.environ, capture_output=True, text=True)
        report_path = args.out / name / "invariance.json"
        if completed.returncode not in (0, 1) or not report_path.is_file():
            last = (completed.stderr.strip() or completed.stdout.strip() or "no output").splitlines()[-1]
            rows[name] = {"error": f"exit {completed.returncode}: {last}"}
        else:
            rows[name] = summarize(json.loads(report_path.read_text()))
        print(f"{name}: exit {completed.returncode} in {time.perf_counter() - started:.0f} s", flush=True)
    command = " ".join(["python scripts/schedule_releases.py", *(
        str(shown_path(Path(argument))) if argument.startswith("/") else argument for argument in sys.argv[1:])])
    write_json_atomic(args.out / "releases.json", {"suite": args.suite, "layout": args.layout,
                                                   "schedules": args.schedules, "command": command,
                                                   "releases": rows})
    write_atomic(args.out / "releases.md", markdown(rows, args, command))
    print(markdown(rows, args, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
