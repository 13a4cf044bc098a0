"""Where one run's wall time goes: per phase and per rank, and each rank's decode split by what it waited on.

    python benchmarks/profile_run.py [--suite NAME] [--toolchain NAME] [--rank N] [--root DIR] --out DIR

Runs ``logitsmatch run SUITE --no-compare --keep-run-dir`` (with the harness of ``--root``, default this
checkout) and reads, for every rank, the phases it recorded (status/rank-N.json) and, at the start and end of
its decode, the kernel's scheduler figures of all its threads (/proc/PID/task/TID/schedstat: seconds on a core
and seconds runnable but waiting for one; /proc/PID/status: voluntary and involuntary context switches).
A rank's decode wall time is then split into:

* on a core, main thread: what it computes, further split by py-spy samples of rank ``--rank`` (on-CPU
  only) by the innermost Python frame: torch ops (linear, einsum, the attention stand-in), the collective
  calls' own CPU (torch.distributed), and the rest (megatron-core's engine, asyncio, Python);
* runnable, waiting for a core: eight ranks on two cores;
* blocked: neither, i.e. waiting for a peer (a collective) or for a request;
* besides, the CPU seconds of the rank's other threads (gloo's I/O loop, ZMQ).

Writes ``profile.json`` and, with matplotlib, ``profile.png`` into ``--out``; prints the tables.
py-spy (``pip install py-spy``) is optional: without it the on-core time is not split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.toolchains import default_toolchain_name, toolchain_venv  # noqa: E402

TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
PHASES = ("init", "weights", "coordinator", "decode", "shutdown")
TICK_S = 0.02


def threads_figures(pid: int) -> dict | None:
    """On-core and runqueue seconds of the main thread and of the others; context switches of the process."""
    try:
        figures = {"main_cpu": 0.0, "main_runqueue": 0.0, "other_cpu": 0.0}
        for task in Path(f"/proc/{pid}/task").iterdir():
            cpu_ns, wait_ns, _ = (int(x) for x in (task / "schedstat").read_text().split())
            if int(task.name) == pid:
                figures["main_cpu"], figures["main_runqueue"] = cpu_ns / 1e9, wait_ns / 1e9
            else:
                figures["other_cpu"] += cpu_ns / 1e9
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                key, value = line.split(":")
                figures[key] = int(value)
        return figures
    except (OSError, ValueError):
        return None


def classify(stack: str) -> str:
    """The innermost Python frame of an on-CPU sample: torch ops, a collective call, or the rest."""
    leaf = stack.rsplit(";", 1)[-1]
    if "torch/distributed" in leaf:
        return "collective call (CPU)"
    if "cpu_attention" in leaf:
        return "attention stand-in"
    if any(mark in leaf for mark in ("tensor_parallel/layers.py", "torch/functional.py", "torch/nn/functional.py",
                                     "rope_utils", "fused_", "torch/nn/modules")):
        return "torch ops"
    return "python (engine, asyncio, megatron)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=TINY)
    parser.add_argument("--toolchain", default=default_toolchain_name(PROJECT / "pyproject.toml"))
    parser.add_argument("--rank", type=int, default=3, help="the rank py-spy samples (default 3)")
    parser.add_argument("--root", type=Path, default=PROJECT, help="the checkout whose harness runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    python = toolchain_venv(PROJECT, args.toolchain) / "bin" / "python"
    results = Path(tempfile.mkdtemp(prefix="logitsmatch-profile-"))
    env = {**os.environ, "PYTHONPATH": str(args.root / "tools"), "LOGITSMATCH_ROOT": str(args.root),
           "LOGITSMATCH_RESULTS": str(results)}
    command = [str(python), "-m", "logitsmatch", "run", args.suite, "--toolchain", args.toolchain, "--no-compare",
               "--keep-run-dir"]
    py_spy = shutil.which("py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=args.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    before: dict[int, dict] = {}
    after: dict[int, dict] = {}
    pids: dict[int, int] = {}
    sampler = None
    raw = args.out / "decode-rank.raw"
    try:
        while process.poll() is None:
            for status_file in results.glob(f"{args.suite}/*/*/.runs/*/status/rank-*.json"):
                rank = int(status_file.stem.split("-")[1])
                try:
                    status = json.loads(status_file.read_text())
                except ValueError:
                    continue
                pids[rank] = status["pid"]
                if status["phase"] == "decode" and rank not in before:
                    figures = threads_figures(status["pid"])
                    if figures is None:  # a thread ended while it was read: read again next tick
                        continue
                    before[rank] = figures
                    if rank == args.rank and py_spy:
                        sampler = subprocess.Popen([py_spy, "record", "--pid", str(status["pid"]), "--nonblocking",
                                                    "--rate", "250", "--format", "raw", "--output", str(raw)],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                elif status["phase"] in ("shutdown", "done") and rank in before and rank not in after:
                    figures = threads_figures(status["pid"])
                    if figures is not None:
                        after[rank] = figures
                    if rank == args.rank and sampler is not None:
                        sampler.send_signal(signal.SIGINT)
            time.sleep(TICK_S)
        whole = time.perf_counter() - started
        output = process.stdout.read().decode(errors="replace")
        if process.returncode != 0:
            raise SystemExit(f"the run failed ({process.returncode}):\n{output[-2000:]}")
        if sampler is not None:
            sampler.wait(timeout=60)
        (run_dir,) = results.glob(f"{args.suite}/*/*/.runs/*")
        ranks = {}
        for rank in sorted(pids):
            status = json.loads((run_dir / "status" / f"rank-{rank}.json").read_text())
            timings = status["timings_s"]
            split = None
            if before.get(rank) and after.get(rank):
                delta = {key: after[rank][key] - before[rank][key] for key in before[rank]}
                wall = timings["decode"]
                split = {
                    "wall": wall,
                    "on_core": delta["main_cpu"],
                    "waiting_for_a_core": delta["main_runqueue"],
                    "blocked": max(wall - delta["main_cpu"] - delta["main_runqueue"], 0.0),
                    "other_threads_cpu": delta["other_cpu"],
                    "voluntary_switches": delta.get("voluntary_ctxt_switches"),
                    "involuntary_switches": delta.get("nonvoluntary_ctxt_switches"),
                }
            ranks[rank] = {"phases": {phase: timings.get(phase, 0.0) for phase in PHASES}, "decode": split}
        zygote_file = run_dir / "status" / "zygote.json"
        zygote = json.loads(zygote_file.read_text()).get("prepare_s") if zygote_file.is_file() else None
        samples: dict[str, int] = {}
        if raw.is_file():
            for line in raw.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                samples[classify(stack)] = samples.get(classify(stack), 0) + int(count)
        profile = {"suite": args.suite, "toolchain": args.toolchain, "root_commit": _commit(args.root),
                   "whole_s": whole, "zygote_prepare_s": zygote, "ranks": ranks,
                   "on_core_samples_rank": args.rank, "on_core_samples": samples}
        (args.out / "profile.json").write_text(json.dumps(profile, indent=2) + "\n")
        report(profile)
        picture(profile, args.out / "profile.png")
        return 0
    finally:
        if process.poll() is None:
            process.terminate()
        shutil.rmtree(results, ignore_errors=True)


def _commit(root: Path) -> str:
    completed = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                               text=True)
    return completed.stdout.strip()


def report(profile: dict) -> None:
    print(f"{profile['suite']} ({profile['toolchain']}, harness {profile['root_commit']}): "
          f"whole command {profile['whole_s']:.1f} s"
          + (f", zygote start-up {profile['zygote_prepare_s']:.1f} s" if profile["zygote_prepare_s"] else ""))
    print(f"{'rank':>4}" + "".join(f"{phase:>12}" for phase in PHASES)
          + f"{'on core':>10}{'wait core':>10}{'blocked':>9}{'threads':>9}{'vol cs':>8}{'invol cs':>9}")
    for rank, figures in profile["ranks"].items():
        split = figures["decode"] or {}
        print(f"{rank:>4}" + "".join(f"{figures['phases'][phase]:>12.2f}" for phase in PHASES)
              + "".join(f"{split.get(key, float('nan')):>{width}.2f}" for key, width in
                        (("on_core", 10), ("waiting_for_a_core", 10), ("blocked", 9), ("other_threads_cpu", 9)))
              + f"{split.get('voluntary_switches', 0):>8}{split.get('involuntary_switches', 0):>9}")
    total = sum(profile["on_core_samples"].values())
    if total:
        shares = ", ".join(f"{name} {100 * count / total:.0f}%" for name, count in
                           sorted(profile["on_core_samples"].items(), key=lambda item: -item[1]))
        print(f"rank {profile['on_core_samples_rank']}'s on-core decode time by innermost frame ({total} samples): "
              f"{shares}")


def picture(profile: dict, path: Path) -> None:
    """Per rank: the phases (left) and the decode split (right), as stacked horizontal bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ranks = sorted(profile["ranks"], key=int)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(ranks) + 1.8))
    for axis, keys, source in ((left, PHASES, "phases"),
                               (right, ("on_core", "waiting_for_a_core", "blocked"), "decode")):
        offsets = [0.0] * len(ranks)
        for key in keys:
            widths = [(profile["ranks"][rank][source] or {}).get(key, 0.0) for rank in ranks]
            axis.barh([f"rank {rank}" for rank in ranks], widths, left=offsets, label=key.replace("_", " "))
            offsets = [offset + width for offset, width in zip(offsets, widths)]
        axis.invert_yaxis()
        axis.set_xlabel("seconds")
        axis.legend(fontsize=7, loc="lower right")
    left.set_title(f"phases per rank (zygote start-up {profile['zygote_prepare_s'] or 0:.1f} s before these)",
                   fontsize=9)
    right.set_title("decode per rank: main thread on a core / waiting for a core / blocked", fontsize=9)
    figure.suptitle(f"{profile['suite']} @ {profile['root_commit']}: whole command {profile['whole_s']:.1f} s",
                    fontsize=10)
    figure.savefig(path, dpi=90, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
