"""gloo's ring all-reduce, same bits, in two hops: gather, fold in ring order, broadcast.

On CPU every tensor-parallel all-reduce of megatron-core goes through gloo, whose ring
algorithm (``gloo/allreduce.cc``) passes each chunk of the tensor around all ranks: 2 × (n − 1)
dependent hops, each a socket wake-up in a loop thread that hands over to a worker thread.
With 8 ranks on 2 cores one all-reduce of a hidden vector took 24 ms, and the seed's 1,488 of
them were most of its decode (docs/performance.md). NCCL, what a GPU run uses, is not
available here at all: gloo is already the stand-in, so what must be kept is gloo's result,
not its message pattern.

A float sum depends on the order of its additions, and the ring fixes that order: element
bytes are cut into segments, segment ``g`` belongs to chunk ``q = g // segments_per_rank``,
and chunk ``q`` is summed starting at rank ``q - 1`` and going down the ring to rank ``q``
(each rank adds its own value to what its upper neighbour sent). This module sends every
rank's value to the group's first rank (one gloo gather), adds them there in exactly that
order, and sends the sum back (one gloo broadcast): the same additions on the same values,
so the same bits, for about an eighth of the time.

It does not take that on faith: the first all-reduce of every (group, dtype, length) is also
run through gloo's own ring on a random tensor of that length, and only if the two agree to
the bit is that shape served this way; otherwise gloo's ring keeps serving it and the rank
says so on stderr. Anything else (async calls, other ops, integer or non-contiguous tensors)
goes to gloo unchanged.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

# gloo's AllreduceOptions::kMaxSegmentSize. Below 2 × group size × this, every chunk is two
# segments and the order below is verified (tests/rank/test_ring_order_allreduce.py); above it
# gloo's ring cuts segments in a way this module does not model, so gloo's ring serves those.
_GLOO_MAX_SEGMENT_BYTES = 1024 * 1024

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

DESCRIPTION = (
    "torch.distributed.all_reduce (blocking SUM of a float CPU tensor) -> one gloo gather to the "
    "group's first rank, summed there in gloo's ring order, one gloo broadcast "
    "(each group, dtype and length checked bitwise against gloo's ring first)"
)


def ring_summation_order(numel: int, element_size: int, group_size: int) -> torch.Tensor:
    """For each addition step and element, the group rank whose value gloo's ring adds then.

    Row 0 holds the rank that starts each element's sum, row ``group_size - 1`` the rank
    that adds last (the chunk's owner). Mirrors gloo's segment arithmetic for tensors of at
    most 2 × group size × its maximum segment, where a chunk is two segments.
    """
    segment = -(-numel * element_size // (2 * group_size))
    segment_elements = -(-segment // element_size)
    chunk = torch.arange(numel) // (2 * segment_elements)
    steps = torch.arange(1, group_size + 1).unsqueeze(1)
    return (chunk.unsqueeze(0) - steps) % group_size


def ring_order_sum(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` (group_size × numel) over ranks, one addition at a time in ``order``."""
    ordered = values.gather(0, order)
    total = ordered[0].clone()
    for step in range(1, ordered.shape[0]):
        total = total + ordered[step]
    return total


class RingOrderAllReduce:
    """A drop-in ``torch.distributed.all_reduce`` that serves verified shapes in two hops."""

    def __init__(self, gloo_all_reduce):
        self._gloo_all_reduce = gloo_all_reduce
        self._verified: dict[tuple, bool] = {}
        self._orders: dict[tuple, torch.Tensor] = {}

    def __call__(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if async_op or op != dist.ReduceOp.SUM or not self._servable(tensor):
            return self._gloo_all_reduce(tensor, op=op, group=group, async_op=async_op)
        group = group if group is not None else dist.group.WORLD
        group_size = dist.get_world_size(group)
        if group_size < 2 or tensor.numel() * tensor.element_size() > 2 * group_size * _GLOO_MAX_SEGMENT_BYTES:
            return self._gloo_all_reduce(tensor, op=op, group=group, async_op=async_op)
        key = (id(group), tensor.dtype, tensor.numel())
        if key not in self._verified:
            self._verified[key] = self._agrees_with_gloo(tensor, group, group_size)
        if not self._verified[key]:
            return self._gloo_all_reduce(tensor, op=op, group=group, async_op=async_op)
        self._gather_sum_broadcast(tensor, group, group_size)
        return None

    @staticmethod
    def _servable(tensor) -> bool:
        return (
            isinstance(tensor, torch.Tensor)
            and tensor.device.type == "cpu"
            and tensor.dtype in _FLOAT_DTYPES
            and tensor.is_contiguous()
            and not tensor.is_sparse
        )

    def _order(self, numel: int, element_size: int, group_size: int) -> torch.Tensor:
        key = (numel, element_size, group_size)
        if key not in self._orders:
            self._orders[key] = ring_summation_order(numel, element_size, group_size)
        return self._orders[key]

    def _gather_sum_broadcast(self, tensor: torch.Tensor, group, group_size: int) -> None:
        root = dist.get_global_rank(group, 0)
        flat = tensor.view(-1)
        if dist.get_rank(group) == 0:
            values = [torch.empty_like(flat) for _ in range(group_size)]
            dist.gather(flat, values, dst=root, group=group)
            order = self._order(flat.numel(), flat.element_size(), group_size)
            flat.copy_(ring_order_sum(torch.stack(values), order))
        else:
            dist.gather(flat, None, dst=root, group=group)
        dist.broadcast(flat, src=root, group=group)

    def _agrees_with_gloo(self, tensor: torch.Tensor, group, group_size: int) -> bool:
        """Run one random tensor of this shape through gloo's ring and through this path."""
        generator = torch.Generator().manual_seed(1_000_003 * (dist.get_rank(group) + 1) + tensor.numel())
        probe = torch.randn(tensor.numel(), generator=generator, dtype=torch.float64).to(tensor.dtype)
        by_gloo = probe.clone()
        self._gloo_all_reduce(by_gloo, group=group)
        by_gather = probe.clone()
        self._gather_sum_broadcast(by_gather, group, group_size)
        agrees = torch.equal(by_gloo, by_gather)  # both sides are identical on every rank
        if not agrees:
            print(
                f"logitsmatch: ring-order all-reduce differs from gloo's ring for {tensor.dtype} × "
                f"{tensor.numel()} over {group_size} ranks; gloo's ring serves that shape",
                file=sys.stderr,
            )
        return agrees


def install() -> list[str]:
    """Route blocking float SUM all-reduces through the two-hop path; return its description."""
    if isinstance(dist.all_reduce, RingOrderAllReduce):
        return [DESCRIPTION]
    dist.all_reduce = RingOrderAllReduce(dist.all_reduce)
    return [DESCRIPTION]
