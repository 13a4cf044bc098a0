"""How long `logitsmatch collect` takes as the number of result files grows (it should grow linearly).

    PYTHONPATH=tools python benchmarks/bench_collect.py [--counts 300,3000,10000]

Each count is that many machines' results/ trees, each holding the committed tiny golden as its result
(the same key and bytes, so the merge is one entry and the time is the scan and the checks of every file).
Prints seconds per count and per 1,000 files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch import paths  # noqa: E402
from logitsmatch.toolchains import default_toolchain_name  # noqa: E402

SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="300,3000,10000")
    args = parser.parse_args()
    toolchain = default_toolchain_name(PROJECT / "pyproject.toml")
    golden = PROJECT / "golden_values" / SUITE / f"golden_values_cpu_{toolchain}.json"
    with tempfile.TemporaryDirectory() as scratch:
        for count in (int(text) for text in args.counts.split(",")):
            root = Path(scratch) / str(count)
            for index in range(count):
                folder = root / f"machine{index}" / "results" / SUITE / "cpu" / toolchain
                folder.mkdir(parents=True)
                shutil.copyfile(golden, folder / "result.json")
                shutil.copyfile(paths.provenance_path(golden), folder / "result.provenance.json")
            start = time.perf_counter()
            command = [sys.executable, "-m", "logitsmatch", "collect", str(root), "--into", str(root / "into"), "-q"]
            subprocess.run(command, cwd=PROJECT, check=True,
                           env={"PYTHONPATH": str(PROJECT / "tools"), "PATH": "/usr/bin:/bin"})
            seconds = time.perf_counter() - start
            print(f"{count:>6} files: {seconds:6.2f} s  ({seconds / count * 1000:.3f} s per 1,000)")
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
