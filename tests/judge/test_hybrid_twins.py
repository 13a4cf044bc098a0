"""The bf16-Mamba-states hybrid case equals its fp32-states twin on the CPU toolchains that run it.

docs/family/coverage.json claims hybrid_dynamic_inference_tp1_pp1_dp8_583m_mamba_bf16_states runs with a
difference: megatron-core 0.16 has no separate Mamba states dtype, so its states follow the fp32 parameters and
the case computes what hybrid_dynamic_inference_tp1_pp1_dp8_583m computes. Their goldens (and their tiny
siblings') hold that: the same tokens and bit-identical logprobs, request by request.
"""

from __future__ import annotations

import json

import pytest

from support import PROJECT

TWINS = [
    ("hybrid_dynamic_inference_tp1_pp1_dp8_583m_mamba_bf16_states", "hybrid_dynamic_inference_tp1_pp1_dp8_583m"),
    ("hybrid_dynamic_inference_tp1_pp1_dp8_tiny_mamba_bf16_states", "hybrid_dynamic_inference_tp1_pp1_dp8_tiny"),
]


def cpu_goldens(suite: str) -> dict[str, dict]:
    folder = PROJECT / "golden_values" / suite
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("golden_values_cpu_*.json"))
            if not path.name.endswith(".provenance.json")}


@pytest.mark.parametrize("bf16_states, fp32_states", TWINS)
def test_the_bf16_states_suite_has_its_twins_numerics(bf16_states, fp32_states):
    ours, twin = cpu_goldens(bf16_states), cpu_goldens(fp32_states)
    assert ours, f"{bf16_states} has no CPU golden"
    assert set(ours) <= set(twin), "a toolchain runs the bf16-states suite but not its twin"
    for name, golden in ours.items():
        assert golden.keys() == twin[name].keys(), name
        for request, entry in golden.items():
            assert entry["generated_tokens"] == twin[name][request]["generated_tokens"], (name, request)
            assert entry["logprobs"] == twin[name][request]["logprobs"], (name, request)
            assert len(entry["logprobs"]) > len(entry["generated_tokens"])  # the prompt's logprobs too
