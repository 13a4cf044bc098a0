"""The chunked-prefill cases really prefill in chunks, and their goldens carry megatron-core's chunk-boundary bug.

Each case here runs with its own --enable-chunked-prefill and --inference-dynamic-batching-max-tokens (64, or 256 at
TP4·EP4). Its goldens are judged against an unchunked suite's goldens on the same toolchain: same weights, same
prompts and one engine of the same layout. The first prompt has 129 tokens here. megatron-core prefills it in three
steps, 64 + 63 + 2 tokens (docs/upstream/chunked-prefill/). Each boundary between chunks reports one wrong prompt
logprob. That logprob belongs to the discarded sampled token: index 63 and index 126. So the goldens differ from the
unchunked ones at exactly those two indices of that request. Everything else stays within 1e-5: the generated
tokens, their logprobs, and the requests that fit in one step. Unchunked, there would be no difference; and a
different split would put the difference at other indices. The TP4·EP4 case asks for 256 tokens per step, so its
prompt is prefilled in one step and its goldens equal the unchunked suite's bit for bit.
"""

from __future__ import annotations

import pytest

from support import cpu_goldens

MEGATRON_TOLERANCE = 1e-3  # what Megatron's comparator allows; the boundary values move by more
SAME = 1e-5  # a few fp32 ulp at these logprobs (a different batch shape moves the last bits)
CHUNK_BOUNDARIES = {"0": [63, 126]}  # request 0's 129 prompt tokens as 64 + 63 + 2
ONE_STEP = {}  # at 256 tokens per step the 129-token prompt is prefilled whole: nothing moves

# chunked suite: (the unchunked suite with the same model, prompts and layout, the logprobs that move against it)
TP1 = "gpt_dynamic_inference_tp1_pp1_"
EP4 = "gpt_dynamic_inference_tp4_pp1_ep4_"
UNCHUNKED = {
    f"{TP1}583m_chunked_prefill": ("gpt_dynamic_inference_tp8_pp1_583m_logitsmatch", CHUNK_BOUNDARIES),
    f"{TP1}tiny_chunked_prefill": ("gpt_dynamic_inference_tp8_pp1_tiny_logitsmatch", CHUNK_BOUNDARIES),
    f"{TP1}583m_prefix_caching_chunked_prefill": (f"{TP1}583m_prefix_caching", CHUNK_BOUNDARIES),
    f"{TP1}tiny_prefix_caching_chunked_prefill": (f"{TP1}tiny_prefix_caching", CHUNK_BOUNDARIES),
    # the eager TP2·PP2 suite (CUDA graphs are not applied on a CPU)
    "gpt_dynamic_inference_tp2_pp2_583m_chunked_prefill": ("gpt_dynamic_inference_tp2_pp2_583m_cuda_graphs",
                                                           CHUNK_BOUNDARIES),
    "gpt_dynamic_inference_tp2_pp2_tiny_chunked_prefill": ("gpt_dynamic_inference_tp2_pp2_tiny_cuda_graphs",
                                                           CHUNK_BOUNDARIES),
    f"{EP4}16B_chunked_prefill": (f"{EP4}16B_logitsmatch", ONE_STEP),
    f"{EP4}tiny_chunked_prefill": (f"{EP4}tiny_logitsmatch", ONE_STEP),
}


def moved(chunked: dict, unchunked: dict, tolerance: float) -> dict[str, list[int]]:
    """{request: the logprob indices where the two differ by more than ``tolerance``} (requests that move)."""
    out = {}
    for request, entry in chunked.items():
        pairs = zip(entry["logprobs"], unchunked[request]["logprobs"], strict=True)
        indices = [index for index, (ours, theirs) in enumerate(pairs) if abs(ours - theirs) > tolerance]
        if indices:
            out[request] = indices
    return out


@pytest.mark.parametrize("chunked, unchunked, boundaries", [(suite, *twin) for suite, twin in UNCHUNKED.items()])
def test_prefill_is_chunked_at_the_cases_max_tokens(chunked, unchunked, boundaries):
    ours, theirs = cpu_goldens(chunked), cpu_goldens(unchunked)
    assert ours, f"{chunked} has no CPU golden"
    assert set(ours) <= set(theirs), f"{unchunked} lacks {sorted(set(ours) - set(theirs))}"
    for name, golden in ours.items():
        reference = theirs[name]
        assert set(golden) == set(reference), name
        for request, entry in golden.items():
            assert entry["input_prompt"] == reference[request]["input_prompt"], (name, request)
            assert entry["generated_tokens"] == reference[request]["generated_tokens"], (name, request)
        assert moved(golden, reference, MEGATRON_TOLERANCE) == boundaries, name
        assert moved(golden, reference, SAME) == boundaries, name
        if boundaries == ONE_STEP:  # the same steps as unchunked: the same numbers, bit for bit
            assert all(entry["logprobs"] == reference[request]["logprobs"] for request, entry in golden.items()), name
