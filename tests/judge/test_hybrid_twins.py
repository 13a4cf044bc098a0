"""The hybrid static case computes what the hybrid dynamic case computes.

docs/family/coverage.json says hybrid_static_inference_tp1_pp1_2B_logitsmatch runs with a difference: Megatron's
driver serves it through StaticInferenceEngine(legacy=False), which is megatron-core's DynamicInferenceEngine run
in-process, where logitsmatch serves it through that engine behind its ZMQ coordinator, with the model and prompt
of hybrid_dynamic_inference_tp1_pp1_dp8_583m. Their goldens (and their tiny siblings') hold it: the same tokens
and bit-identical logprobs on every toolchain that has both.
"""

from __future__ import annotations

import pytest

from support import cpu_goldens

TWINS = [
    ("hybrid_static_inference_tp1_pp1_2B_logitsmatch", "hybrid_dynamic_inference_tp1_pp1_dp8_583m"),
    ("hybrid_static_inference_tp1_pp1_tiny_logitsmatch", "hybrid_dynamic_inference_tp1_pp1_dp8_tiny"),
]


@pytest.mark.parametrize("static, dynamic", TWINS)
def test_the_static_case_has_the_dynamic_cases_numerics(static, dynamic):
    ours, twin = cpu_goldens(static), cpu_goldens(dynamic)
    assert ours and set(ours) == set(twin), (sorted(ours), sorted(twin))
    for name, golden in ours.items():
        assert len(golden) == len(twin[name]) == 1, name
        (entry,), (other,) = golden.values(), twin[name].values()
        assert entry["input_prompt"] == other["input_prompt"], name
        assert entry["generated_tokens"] == other["generated_tokens"], name
        assert entry["logprobs"] == other["logprobs"], name
        assert len(entry["logprobs"]) > len(entry["generated_tokens"])  # the prompt's logprobs too
