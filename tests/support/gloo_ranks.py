"""Run a function in a few forked gloo ranks on loopback: how the rank tests exercise collectives for real."""

from __future__ import annotations

import multiprocessing
import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def in_gloo_group(world: int, body) -> list:
    """Run ``body(rank, world)`` in ``world`` forked gloo ranks; return what each rank returned."""
    import torch
    import torch.distributed as dist

    port = free_port()
    context = multiprocessing.get_context("fork")
    answers = context.Queue()

    def rank_main(rank):
        import os

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            answers.put((rank, body(rank, world)))
        finally:
            dist.destroy_process_group()

    ranks = [context.Process(target=rank_main, args=(rank,)) for rank in range(world)]
    for process in ranks:
        process.start()
    results = dict(answers.get(timeout=120) for _ in ranks)
    for process in ranks:
        process.join(timeout=30)
        assert process.exitcode == 0
    return [results[rank] for rank in range(world)]
