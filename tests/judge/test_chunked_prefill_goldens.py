"""The chunked-prefill cases really prefill in chunks, and their goldens carry megatron-core's chunk-boundary bug.

Each case here runs with the case's own --enable-chunked-prefill and --inference-dynamic-batching-max-tokens 64.
Its goldens are judged against an unchunked suite's goldens on the same toolchain: same weights, same prompts and
one engine of the same layout. The first prompt has 129 tokens here. megatron-core prefills it in three steps,
64 + 63 + 2 tokens (docs/upstream/chunked-prefill/). Each boundary between chunks reports one wrong prompt logprob.
That logprob belongs to the discarded sampled token: index 63 and index 126. So the goldens differ from the
unchunked ones at exactly those two indices of that request. Everything else stays within 1e-5: the generated
tokens, their logprobs, and the requests that fit in one step. Unchunked, there would be no difference; and a
different split would put the difference at other indices.
"""

from __future__ import annotations

import json

import pytest

from support import PROJECT

MEGATRON_TOLERANCE = 1e-3  # what Megatron's comparator allows; the boundary values move by more
SAME = 1e-5  # a few fp32 ulp at these logprobs (a different batch shape moves the last bits)
CHUNK_BOUNDARIES = {"0": [63, 126]}  # request 0's 129 prompt tokens as 64 + 63 + 2

# chunked suite: the unchunked suite with the same model, prompts and layout
TP1 = "gpt_dynamic_inference_tp1_pp1_"
UNCHUNKED = {
    f"{TP1}583m_chunked_prefill": "gpt_dynamic_inference_tp8_pp1_583m_logitsmatch",
    f"{TP1}tiny_chunked_prefill": "gpt_dynamic_inference_tp8_pp1_tiny_logitsmatch",
    f"{TP1}583m_prefix_caching_chunked_prefill": f"{TP1}583m_prefix_caching",
    f"{TP1}tiny_prefix_caching_chunked_prefill": f"{TP1}tiny_prefix_caching",
    "gpt_dynamic_inference_tp2_pp2_583m_chunked_prefill": "gpt_dynamic_inference_tp2_pp2_583m_cuda_graphs",  # eager
    "gpt_dynamic_inference_tp2_pp2_tiny_chunked_prefill": "gpt_dynamic_inference_tp2_pp2_tiny_cuda_graphs",
}


def cpu_goldens(suite: str) -> dict[str, dict]:
    folder = PROJECT / "golden_values" / suite
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("golden_values_cpu_*.json"))
            if not path.name.endswith(".provenance.json")}


def moved(chunked: dict, unchunked: dict, tolerance: float) -> dict[str, list[int]]:
    """{request: the logprob indices where the two differ by more than ``tolerance``} (requests that move)."""
    out = {}
    for request, entry in chunked.items():
        pairs = zip(entry["logprobs"], unchunked[request]["logprobs"], strict=True)
        indices = [index for index, (ours, theirs) in enumerate(pairs) if abs(ours - theirs) > tolerance]
        if indices:
            out[request] = indices
    return out


@pytest.mark.parametrize("chunked, unchunked", UNCHUNKED.items())
def test_prefill_is_chunked_at_the_cases_max_tokens(chunked, unchunked):
    ours, theirs = cpu_goldens(chunked), cpu_goldens(unchunked)
    assert ours, f"{chunked} has no CPU golden"
    assert set(ours) <= set(theirs), f"{unchunked} lacks {sorted(set(ours) - set(theirs))}"
    for name, golden in ours.items():
        reference = theirs[name]
        assert set(golden) == set(reference), name
        for request, entry in golden.items():
            assert entry["input_prompt"] == reference[request]["input_prompt"], (name, request)
            assert entry["generated_tokens"] == reference[request]["generated_tokens"], (name, request)
        assert moved(golden, reference, MEGATRON_TOLERANCE) == CHUNK_BOUNDARIES, name
        assert moved(golden, reference, SAME) == CHUNK_BOUNDARIES, name
