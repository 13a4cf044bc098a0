"""Phase breakdown of one TP8 run, and what nox adds on top of a bare launch.

    python benchmarks/bench_run.py [--toolchain NAME] [--suite NAME] [--repeat N]

Warms the toolchain's venv first (one untimed nox run; .nox/toolchains/<toolchain>). Prints,
for each repetition: a bare `logitsmatch run` (wall, and the phases the ranks
report: start = interpreter + launcher up to rank init, then init, weights,
coordinator, decode, shutdown), then the same run through warm nox (the venv's
stamp stands, so nox installs nothing).
Run it on an otherwise idle machine: 8 ranks share the cores.
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

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.toolchains import default_toolchain_name, toolchain_venv  # noqa: E402

TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"


def timed(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(
            f"failed ({completed.returncode}): "
            f"{' '.join(command)}\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return elapsed, completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolchain", default=default_toolchain_name(PROJECT / "pyproject.toml"))
    parser.add_argument("--suite", default=TINY)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    results = Path(tempfile.mkdtemp(prefix="logitsmatch-bench-"))
    env = {**os.environ, "LOGITSMATCH_RESULTS": str(results)}
    provenance = results / args.suite / "cpu" / args.toolchain / "result.provenance.json"
    nox = [sys.executable, "-m", "nox", "-s", f"logitsmatch({args.toolchain})"]

    timed([*nox, "--", args.suite, "--no-compare"], env)
    bin_dir = toolchain_venv(PROJECT, args.toolchain) / "bin"
    print(f"suite {args.suite}, toolchain {args.toolchain}, {os.cpu_count()} CPUs, venv {bin_dir.parent.name}")
    print(f"{'run':<22}{'wall s':>8}{'start':>8}{'init':>8}{'weights':>9}{'coord':>8}{'decode':>8}{'shutdown':>10}")
    for _ in range(args.repeat):
        bare, _ = timed(
            [str(bin_dir / "logitsmatch"), "run", args.suite, "--toolchain", args.toolchain, "--no-compare"], env
        )
        phases = json.loads(provenance.read_text())["timings_s"]
        ranks = sum(phases[name] for name in ("init", "weights", "coordinator", "decode", "shutdown"))
        start = bare - ranks
        print(
            f"{'bare logitsmatch run':<22}{bare:>8.1f}{start:>8.1f}{phases['init']:>8.1f}{phases['weights']:>9.1f}"
            f"{phases['coordinator']:>8.1f}{phases['decode']:>8.1f}{phases['shutdown']:>10.1f}"
        )
        wall, _ = timed([*nox, "--", args.suite, "--no-compare"], env)
        print(f"{'nox (warm)':<22}{wall:>8.1f}   overhead over bare: {wall - bare:+.1f} s")


if __name__ == "__main__":
    main()
