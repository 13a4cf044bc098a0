"""Benchmark `logitsmatch compare` on golden files of realistic size; prints figures, asserts nothing.

    PYTHONPATH=tools python benchmarks/bench_compare.py [--requests 1000] [--logprobs 1117] [--repeat 3]
        [--megatron-lm DIR]

Writes a synthetic golden and three "current" files (about 23 MB each at the
default size) into a temp dir. Each figure is the best of ``--repeat`` runs,
each in a fresh process, the two sides of a ratio interleaved in the same run:

  logitsmatch --json   `python -m logitsmatch compare G C --json R`, the whole process
  megatron             Megatron-LM's own comparator, from the checkout --megatron-lm (or
                       $MEGATRON_LM_DIR) names, as a whole process: `test_inference_pipeline(G, C,
                       model_config)`; without a checkout it is not measured (and the script says so)
  logitsmatch --deepdiff  the same compare writing DeepDiff's result shape too (--deepdiff)
  breakdown            in one process: imports, parse, compare, reports
  deepdiff itself      DeepDiff(math_epsilon=1e-3, zip_ordered_iterables=True, ...) on the
                       first 10 and 100 requests, extrapolated to all

Scenarios: "rerun" (every logprob moved by ~1e-5, within tolerance: passes),
"drift" (1% of logprobs out of tolerance, 2% of requests diverge) and
"worst" (every logprob out of tolerance: the JSON report lists all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
COMPARATOR = Path("tests/functional_tests/python_test_utils/test_inference_regular_pipeline.py")  # in Megatron-LM
GENERATED = 30
SCENARIOS = ("rerun", "drift", "worst")
MODEL_CONFIG = "MODE: inference\nMETRICS:\n  - generated_tokens\n  - logprobs\n"
RUN_MEGATRON = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("megatron_comparator", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
try:
    module.test_inference_pipeline(sys.argv[2], sys.argv[3], sys.argv[4])
except AssertionError:
    sys.exit(1)
"""


def make_files(folder: Path, n_requests: int, n_logprobs: int) -> dict[str, Path]:
    """A golden and one current file per scenario, written like Megatron writes them."""
    rng = np.random.default_rng(0)
    golden = {}
    for rid in range(n_requests):
        golden[str(rid)] = {
            "input_prompt": "Time travel to 2008, and go to a bar or a club " * 6,
            "generated_text": " And that this is the place where you can be yourself" * 2,
            "generated_tokens": rng.integers(1000, 131072, GENERATED).tolist(),
            "latency": float(rng.uniform(1, 10)),
            "logprobs": (-rng.exponential(2.5, n_logprobs)).tolist(),
        }
    golden["throughput"] = rng.uniform(10, 13, 30).tolist()
    currents = {"rerun": _moved(golden, rng, 1e-5, 1.0, 0.0),
                "drift": _moved(golden, rng, 5e-3, 0.01, 0.02),
                "worst": _moved(golden, rng, 5e-2, 1.0, 0.0, floor=2e-3)}
    paths = scenario_paths(folder)
    paths["golden"].write_text(json.dumps(golden))
    for name, doc in currents.items():
        paths[name].write_text(json.dumps(doc))
    return paths


def scenario_paths(folder: Path) -> dict[str, Path]:
    return {"golden": folder / "golden.json", **{name: folder / f"current_{name}.json" for name in SCENARIOS}}


def _moved(golden: dict, rng, scale: float, fraction: float, diverge: float, floor: float = 0.0) -> dict:
    """Golden with `fraction` of logprobs moved by ~scale (at least `floor`), some requests diverging."""
    current = {}
    for rid, request in golden.items():
        if not isinstance(request, dict):
            current[rid] = request
            continue
        values = np.array(request["logprobs"])
        moved = rng.random(len(values)) < fraction
        step = np.maximum(np.abs(rng.normal(0, scale, len(values))), floor) * rng.choice([-1, 1], len(values))
        values = np.where(moved, values + step, values)
        tokens = list(request["generated_tokens"])
        if rng.random() < diverge:
            tokens[int(rng.integers(0, GENERATED))] += 1
        current[rid] = dict(
            request, logprobs=values.tolist(), generated_tokens=tokens, latency=request["latency"] * 1.1
        )
    return current


def timed(command: list[str]) -> dict:
    """One whole process: wall seconds, exit code, and its own peak RSS (GNU time's %M: the benchmark's
    own memory would otherwise count, as a forked child's high-water mark starts at its parent's)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT / "tools"), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"seconds": seconds, "rc": done.returncode, "peak_rss_mb": int(done.stderr.strip().splitlines()[-1]) / 1024}


def commands(golden: Path, current: Path, out: Path, comparator: Path | None) -> dict[str, list[str]]:
    """The timed commands; Megatron's comparator only when a checkout gave one."""
    config = out / "model_config.yaml"
    config.write_text(MODEL_CONFIG)
    ours = [
        sys.executable,
        "-m",
        "logitsmatch",
        "compare",
        str(golden),
        str(current),
        "--json",
        str(out / "report.json"),
    ]
    runs = {"logitsmatch --json": ours}
    if comparator is not None:
        runs["megatron"] = [sys.executable, "-c", RUN_MEGATRON, str(comparator), str(golden), str(current), str(config)]
    runs["logitsmatch --deepdiff"] = [*ours, "--deepdiff", str(out / "deepdiff.json")]
    return runs


def best_interleaved(repeat: int, runs: dict[str, list[str]]) -> dict[str, dict]:
    """Best of ``repeat`` per command, the commands taking turns (a load spike hits all alike)."""
    best: dict[str, dict] = {}
    for _ in range(repeat):
        for name, command in runs.items():
            figures = timed(command)
            if name not in best or figures["seconds"] < best[name]["seconds"]:
                best[name] = figures
    return best


def breakdown(golden: Path, current: Path, out: Path) -> dict:
    """Where one in-process compare spends its time (fresh interpreter)."""
    script = f"""
import json, time
t0 = time.perf_counter()
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.compare import compare
from logitsmatch.judge.policy import Policy
from logitsmatch.judge.report import render_terminal, write_reports
t1 = time.perf_counter()
g, c = load_golden({str(golden)!r}), load_golden({str(current)!r})
t2 = time.perf_counter()
r = compare(g, c, Policy())
t3 = time.perf_counter()
render_terminal(r); write_reports(r, {str(out / "r.json")!r})
t4 = time.perf_counter()
import sys
print(json.dumps({{"imports": t1 - t0, "parse": t2 - t1, "compare": t3 - t2, "reports": t4 - t3,
                  "verdict": r.verdict, "over": r.n_over_tolerance, "deepdiff_imported": "deepdiff" in sys.modules}}))
"""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tools")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


def deepdiff_itself(golden: Path, current: Path, sizes=(10, 100)) -> dict[int, float]:
    """Seconds DeepDiff takes on the first N requests (whole requests, logprobs included)."""
    sys.path.insert(0, str(PROJECT / "tools"))
    from deepdiff import DeepDiff

    g, c = json.loads(golden.read_text()), json.loads(current.read_text())
    options = {
        "math_epsilon": 1e-3,
        "zip_ordered_iterables": True,
        "threshold_to_diff_deeper": 0,
        "ignore_nan_inequality": True,
    }
    figures = {}
    ids_all = [k for k, v in g.items() if isinstance(v, dict)]
    for size in (s for s in sizes if s <= len(ids_all)):
        ids = ids_all[:size]
        started = time.perf_counter()
        DeepDiff({k: g[k] for k in ids}, {k: c[k] for k in ids}, **options)
        figures[size] = time.perf_counter() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--logprobs", type=int, default=1117)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the fastest is shown")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--megatron-lm", type=Path, default=os.environ.get("MEGATRON_LM_DIR") or None, metavar="DIR",
                        help="a Megatron-LM checkout whose comparator to time too (default: $MEGATRON_LM_DIR)")
    args = parser.parse_args()
    comparator = args.megatron_lm / COMPARATOR if args.megatron_lm else None
    if comparator is not None and not comparator.is_file():
        raise SystemExit(f"bench_compare: {args.megatron_lm} is not a Megatron-LM checkout: it has no {COMPARATOR}")
    print(
        f"{args.requests} requests x {args.logprobs} logprobs; python {sys.version.split()[0]}, numpy "
        f"{np.__version__}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; best of {args.repeat}, interleaved"
    )
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        paths = make_files(Path(folder), args.requests, args.logprobs)
        sizes = ", ".join(f"{name} {path.stat().st_size / 1e6:.1f} MB" for name, path in paths.items())
        print(f"generated in {time.perf_counter() - started:.1f} s: {sizes}")
        if comparator is None:
            print("megatron: skipped, no Megatron-LM checkout (--megatron-lm DIR or MEGATRON_LM_DIR)")
        for scenario in args.scenarios.split(","):
            out = Path(folder) / f"out_{scenario}"
            out.mkdir()
            best = best_interleaved(args.repeat, commands(paths["golden"], paths[scenario], out, comparator))
            print(f"\n[{scenario}]")
            for name, figures in best.items():
                verdict = "pass" if figures["rc"] == 0 else "fail"
                print(f"  {name:<24} {figures['seconds']:6.2f} s  peak RSS {figures['peak_rss_mb']:5.0f} MB  {verdict}")
            if "megatron" in best:
                ratio = best["logitsmatch --json"]["seconds"] / best["megatron"]["seconds"]
                print(f"  ratio logitsmatch --json / megatron = {ratio:.2f}")
            parts = breakdown(paths["golden"], paths[scenario], out)
            print(f"  breakdown (one process): imports {parts['imports']:.2f} + parse {parts['parse']:.2f} + compare "
                  f"{parts['compare']:.2f} + reports {parts['reports']:.2f} s; {parts['over']} over tolerance; "
                  f"deepdiff imported: {parts['deepdiff_imported']}")
            report = out / "report.json"
            print(f"  JSON report {report.stat().st_size / 1e6:.1f} MB; deepdiff-shaped output "
                  f"{(out / 'deepdiff.json').stat().st_size / 1e6:.1f} MB")
            if scenario == "rerun":
                slices = deepdiff_itself(paths["golden"], paths[scenario])
                for size, seconds in slices.items():
                    total = seconds * args.requests / size
                    print(
                        f"  deepdiff itself on {size:>3} requests {seconds:6.2f} s -> {total:6.1f} s for "
                        f"{args.requests} "
                        f"(x{total / best['logitsmatch --deepdiff']['seconds']:.0f} logitsmatch --deepdiff)"
                    )


if __name__ == "__main__":
    main()
