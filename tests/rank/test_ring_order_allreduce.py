"""The two-hop all-reduce gives gloo's ring all-reduce result to the bit, and says when it cannot.

The reference is gloo itself: each case runs ``torch.distributed.all_reduce`` over gloo on the
same tensors in the same processes, so nothing here restates what gloo computes.
"""

from __future__ import annotations

import pytest

from support.gloo_ranks import in_gloo_group

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

# Lengths around the chunk boundaries (odd, smaller than the group, one past a multiple) and the
# shapes a run reduces: the seed's hidden size for one token and for its 129-token prefill.
LENGTHS = (1, 7, 16, 17, 100, 1152, 1153, 4608, 129 * 1152, 300_001)
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _random(rank: int, length: int, dtype: str):
    generator = torch.Generator().manual_seed(7919 * rank + length)
    return (torch.randn(length, generator=generator, dtype=torch.float64) * 3).to(getattr(torch, dtype))


def _mismatches_against_gloo(rank: int, world: int) -> list:
    from logitsmatch.rank.ring_order_allreduce import RingOrderAllReduce

    gloo = dist.all_reduce
    two_hop = RingOrderAllReduce(gloo)
    upper = dist.new_group(list(range(1, world))) if world > 2 else None  # a group whose first rank is not 0
    mismatches = []
    for dtype in DTYPES:
        for length in LENGTHS:
            values = _random(rank, length, dtype)
            for group, size in ((dist.group.WORLD, world), (upper, world - 1)):
                if group is None or (group is upper and rank == 0):
                    continue
                by_gloo = values.clone()
                gloo(by_gloo, group=group)
                by_two_hops = values.clone()
                two_hop._gather_sum_broadcast(by_two_hops, group, size)
                if not torch.equal(by_gloo, by_two_hops):
                    mismatches.append((dtype, length, size))
    return mismatches


@pytest.mark.parametrize("world", [2, 3, 8])
def test_two_hop_sum_equals_gloo_ring_bitwise(world):
    """Every dtype and length, the whole group and a sub-group: the same bits as gloo's ring.

    Float sums depend on their order, so this fails for any order but gloo's (e.g. summing
    rank 0 first, or one order for the whole tensor instead of one per chunk).
    """
    assert in_gloo_group(world, _mismatches_against_gloo) == [[]] * world


def _installed_call(rank: int, world: int) -> dict:
    from logitsmatch.rank import ring_order_allreduce

    gloo = dist.all_reduce
    ring_order_allreduce.install()
    served = []
    original = dist.gather
    dist.gather = lambda *args, **kwargs: (served.append(1), original(*args, **kwargs))[1]
    values = _random(rank, 1152, "float32")
    expected = values.clone()
    gloo(expected)
    reduced = values.clone()
    dist.all_reduce(reduced)
    integers = torch.full((5,), rank + 1, dtype=torch.int64)
    dist.all_reduce(integers)
    dist.gather = original
    return {
        "equal": torch.equal(reduced, expected),
        "gathers": len(served),
        "integers": integers.tolist(),
    }


def test_installed_all_reduce_checks_each_shape_once_then_serves_it_and_leaves_the_rest_to_gloo():
    """One probe (a gather) plus the call's gather for the float tensor; the integers go to gloo."""
    answers = in_gloo_group(4, _installed_call)
    assert all(answer["equal"] for answer in answers)
    assert {answer["gathers"] for answer in answers} == {2}
    assert all(answer["integers"] == [10] * 5 for answer in answers)


def _wrong_order_call(rank: int, world: int) -> dict:
    from logitsmatch.rank import ring_order_allreduce

    gloo = dist.all_reduce
    two_hop = ring_order_allreduce.RingOrderAllReduce(gloo)
    ring_order_allreduce.ring_summation_order = lambda numel, size, group: (
        torch.arange(group).unsqueeze(1).expand(group, numel).contiguous())  # rank 0 first everywhere
    values = _random(rank, 1152, "float32")
    expected = values.clone()
    gloo(expected)
    reduced = values.clone()
    two_hop(reduced)
    return {"equal": torch.equal(reduced, expected), "verified": list(two_hop._verified.values())}


def test_a_shape_whose_order_disagrees_with_gloo_is_left_to_gloo(capfd):
    """A wrong order model is caught by the probe: the call still gets gloo's bits, and says so."""
    answers = in_gloo_group(8, _wrong_order_call)
    assert all(answer["equal"] for answer in answers)
    assert all(answer["verified"] == [False] for answer in answers)
    assert "differs from gloo's ring" in capfd.readouterr().err
