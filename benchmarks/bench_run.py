"""A/B benchmark of whole runs: this checkout against a reference commit, on the same machine, bit for bit.

    python benchmarks/bench_run.py --against REF [--toolchain NAME] [--suite NAME ...] [--repeat N] [--out FILE]

Checks REF out into a temporary git worktree and runs each suite (default: the seed and its tiny TP8
sibling) as `logitsmatch run SUITE --toolchain T --no-compare`, once with REF's harness and once with
this checkout's, in the same toolchain venv (each side's ``tools/`` first on PYTHONPATH, its own project
root), alternating which side goes first. Both sides share one synthetic-weights cache, warmed by an
untimed run first, so neither pays for writing weights. Prints, per suite and side, the min and median of
the whole command's wall time and of every phase the run records (``timings_s`` in its provenance), and
the ratio of the medians (reference / this checkout). Every result is then compared with the first
reference result in deterministic mode (``logitsmatch compare --mode deterministic``): any moved bit is a
failure and the script exits 1. Run it on an otherwise idle machine; it says which machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.paths import cache_root  # noqa: E402
from logitsmatch.toolchains import default_toolchain_name, toolchain_venv  # noqa: E402

SEED = "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq"
TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
SIDES = ("reference", "this")


def machine() -> str:
    """CPU model, cores, memory and the vector extension that sets CPU results' bits (AVX2 or AVX-512)."""
    info = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    vector = "AVX-512" if " avx512f" in flags else ("AVX2" if " avx2" in flags else "no AVX2")
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return f"{model}, {os.cpu_count()} CPUs, {int(memory) / 2**20:.0f} GiB, {vector}, {platform.platform()}"


def one_run(root: Path, python: Path, suite: str, toolchain: str, results: Path, cache: Path) -> dict:
    """One `logitsmatch run` with the harness in ``root``: whole wall seconds, phases, result path."""
    env = {**os.environ, "PYTHONPATH": str(root / "tools"), "LOGITSMATCH_ROOT": str(root),
           "LOGITSMATCH_RESULTS": str(results), "LOGITSMATCH_CACHE": str(cache)}
    command = [str(python), "-m", "logitsmatch", "run", suite, "--toolchain", toolchain, "--no-compare"]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"failed ({completed.returncode}) in {root}: {' '.join(command)}\n"
                         f"{completed.stdout[-1500:]}{completed.stderr[-1500:]}")
    (result,) = results.rglob(f"{suite}/**/result.json")
    timings = json.loads(result.with_name("result.provenance.json").read_text())["timings_s"]
    return {"whole": wall, **{phase: float(seconds) for phase, seconds in timings.items() if seconds is not None},
            "result": result}


def bitwise_equal(python: Path, reference: Path, candidate: Path) -> bool:
    """The judge's deterministic mode: every token and logprob bit-identical (exit 0)."""
    completed = subprocess.run([str(python), "-m", "logitsmatch", "compare", "--mode", "deterministic",
                                str(reference), str(candidate)], cwd=PROJECT, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")})
    if completed.returncode not in (0, 1):
        raise SystemExit(f"compare failed ({completed.returncode}): {completed.stderr[-1500:]}")
    return completed.returncode == 0


def table(suite: str, runs: dict[str, list[dict]]) -> list[str]:
    """Per phase: each side's min and median seconds, and the ratio of the medians (reference / this)."""
    phases = []
    for side in SIDES:
        for run in runs[side]:
            phases += [name for name in run if name != "result" and name not in phases]
    lines = [suite, f"  {'phase':<16}{'ref min':>9}{'ref med':>9}{'this min':>10}{'this med':>10}{'ratio':>8}"]
    for phase in phases:
        figures = {}
        for side in SIDES:
            values = [run[phase] for run in runs[side] if phase in run]
            figures[side] = (min(values), statistics.median(values)) if values else None
        ref, this = figures["reference"], figures["this"]
        ratio = f"{ref[1] / this[1]:>7.1f}x" if ref and this and this[1] > 0 else f"{'-':>8}"
        ref_cells = f"{ref[0]:>9.1f}{ref[1]:>9.1f}" if ref else f"{'-':>9}{'-':>9}"
        this_cells = f"{this[0]:>10.1f}{this[1]:>10.1f}" if this else f"{'-':>10}{'-':>10}"
        lines.append(f"  {phase:<16}{ref_cells}{this_cells}{ratio}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, metavar="REF", help="the reference commit (e.g. 811e128)")
    parser.add_argument("--toolchain", default=default_toolchain_name(PROJECT / "pyproject.toml"))
    parser.add_argument("--suite", action="append", default=None, help=f"default: {SEED} and {TINY}")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    suites = args.suite or [SEED, TINY]
    python = toolchain_venv(PROJECT, args.toolchain) / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"no venv for {args.toolchain}: nox -s 'logitsmatch({args.toolchain})' --install-only")
    scratch = Path(tempfile.mkdtemp(prefix="logitsmatch-bench-"))
    reference = scratch / "reference-checkout"
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--quiet", "--detach", str(reference),
                    args.against], check=True)
    roots = {"reference": reference, "this": PROJECT}
    commit = subprocess.run(["git", "-C", str(reference), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        cache = cache_root()
        print(f"machine: {machine()}")
        print(f"toolchain {args.toolchain}; reference {args.against} ({commit}) vs this checkout; "
              f"{args.repeat} runs per side and suite, alternating; weights cache {cache} (warmed first)")
        for suite in suites:  # untimed: writes the weights if the cache lacks them
            one_run(PROJECT, python, suite, args.toolchain, scratch / "warm" / suite, cache)
        runs = {suite: {side: [] for side in SIDES} for suite in suites}
        for repeat in range(args.repeat):
            order = SIDES if repeat % 2 == 0 else SIDES[::-1]
            for suite in suites:
                for side in order:
                    results = scratch / side / str(repeat)
                    runs[suite][side].append(one_run(roots[side], python, suite, args.toolchain, results, cache))
        moved = []
        for suite in suites:
            first = runs[suite]["reference"][0]["result"]
            for side in SIDES:
                for index, run in enumerate(runs[suite][side]):
                    if not bitwise_equal(python, first, run["result"]):
                        moved.append(f"{suite} {side} run {index}")
            print("\n".join(table(suite, runs[suite])))
        verdict = "every result equals the first reference result" if not moved else "MOVED: " + ", ".join(moved)
        count = sum(len(runs[suite][side]) for suite in suites for side in SIDES)
        print(f"bitwise: {verdict} ({count} results, deterministic mode)")
        if args.out:
            figures = {"machine": machine(), "reference": commit, "toolchain": args.toolchain, "moved": moved,
                       "runs": {suite: {side: [{key: value for key, value in run.items() if key != "result"}
                                               for run in runs[suite][side]] for side in SIDES} for suite in suites}}
            args.out.write_text(json.dumps(figures, indent=2) + "\n")
        return 1 if moved else 0
    finally:
        subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(reference)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
