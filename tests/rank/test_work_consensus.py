"""The coordinator loop's work consensus is re-established every loop where the release caches it (0.18+), so the
ranks of one engine run the same dummy forwards (rank.adapters.Mcore017.work_consensus_every_loop)."""

from __future__ import annotations

from dataclasses import dataclass

from logitsmatch.rank.adapters import Mcore017


@dataclass
class InferenceConfig018:
    """Shaped as megatron-core 0.18's InferenceConfig where it matters: the cached consensus and its interval."""

    max_tokens: int = 0
    disable_ep_consensus: bool = False
    ep_consensus_interval: int = 20


@dataclass
class InferenceConfig017:
    """Shaped as megatron-core 0.17's: the consensus is re-established on every loop, no interval to set."""

    max_tokens: int = 0


def test_a_release_that_caches_the_consensus_gets_it_every_loop():
    kwargs = Mcore017.work_consensus_every_loop(InferenceConfig018)
    assert kwargs == {"ep_consensus_interval": 1}
    assert InferenceConfig018(**kwargs).ep_consensus_interval == 1


def test_a_release_without_the_interval_is_passed_nothing():
    assert Mcore017.work_consensus_every_loop(InferenceConfig017) == {}
