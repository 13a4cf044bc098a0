"""gloo's ring all-reduce against the two-hop path that gives its bits (rank/ring_order_allreduce.py).

    python benchmarks/bench_allreduce.py [--ranks 8] [--length 1152] [--repeat 300] [--toolchain NAME]

Forks ``--ranks`` gloo ranks on loopback (threads pinned to one, as a run's ranks are) in the
toolchain's venv and times ``--repeat`` all-reduces of a float32 tensor of ``--length`` elements
(1152: one token of the seed's hidden state, what each of its decode steps reduces 48 times), first
through gloo's ring, then through the two-hop path, alternating in blocks. Prints per path the
median milliseconds per all-reduce (slowest rank) and the main thread's CPU milliseconds per
all-reduce (mean over ranks), and checks that the two paths' results are bitwise equal (exit 1 if
not). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

RANK_PROGRAM = r"""
import json, os, sys, time
import torch, torch.distributed as dist
from logitsmatch.rank.ring_order_allreduce import RingOrderAllReduce

ranks, length, repeat, blocks, port = map(int, sys.argv[1:6])

def rank_main(rank, pipe):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    gloo = dist.all_reduce
    paths = {"gloo ring": gloo, "two hops": RingOrderAllReduce(gloo)}
    values = torch.randn(length, generator=torch.Generator().manual_seed(rank))
    results = {}
    for name, all_reduce in paths.items():
        reduced = values.clone()
        all_reduce(reduced)  # the two-hop path checks this shape against gloo's ring here, once
        results[name] = reduced
    figures = {name: [] for name in paths}
    for _ in range(blocks):
        for name, all_reduce in paths.items():
            dist.barrier()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeat // blocks):
                all_reduce(values.clone())
            count = repeat // blocks
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            figures[name].append((wall / count * 1e3, cpu / count * 1e3))
    pipe.write(json.dumps([rank, torch.equal(results["gloo ring"], results["two hops"]), figures]) + "\n")
    pipe.flush()
    dist.destroy_process_group()

read_end, write_end = os.pipe()
children = []
for rank in range(ranks):
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        rank_main(rank, os.fdopen(write_end, "w"))
        os._exit(0)
    children.append(pid)
os.close(write_end)
for line in os.fdopen(read_end):
    print(line.strip())
for pid in children:
    os.waitpid(pid, 0)
"""


def main() -> int:
    sys.path.insert(0, str(PROJECT / "tools"))
    from logitsmatch.toolchains import default_toolchain_name, toolchain_venv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--length", type=int, default=1152)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=5, help="alternations between the two paths")
    parser.add_argument("--toolchain", default=None)
    args = parser.parse_args()
    toolchain = args.toolchain or default_toolchain_name(PROJECT / "pyproject.toml")
    python = toolchain_venv(PROJECT, toolchain) / "bin" / "python"
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    completed = subprocess.run(
        [str(python), "-c", RANK_PROGRAM, str(args.ranks), str(args.length), str(args.repeat), str(args.blocks),
         str(port)],
        env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")}, capture_output=True, text=True, check=True)
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("[")]
    print(f"{args.ranks} gloo ranks on loopback, float32 × {args.length}, {args.repeat} all-reduces per path, "
          f"toolchain {toolchain}, {os.cpu_count()} CPUs")
    print(f"{'path':<10} {'ms per all-reduce (median block, slowest rank)':>48} {'main-thread CPU ms (mean rank)':>32}")
    for name in reports[0][2]:
        blocks = list(zip(*(figures[name] for _, _, figures in reports)))
        wall = statistics.median(max(figure[0] for figure in block) for block in blocks)
        cpu = statistics.median(statistics.fmean(figure[1] for figure in block) for block in blocks)
        print(f"{name:<10} {wall:>48.2f} {cpu:>32.2f}")
    equal = all(same for _, same, _ in reports)
    print("bitwise: " + ("equal on every rank" if equal else "DIFFERENT"))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
