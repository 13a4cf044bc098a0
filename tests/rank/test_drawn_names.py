"""Synthetic weights are drawn by parameter name: a parameter megatron-core renamed keeps its older name's values,
so every release loads the same synthetic model (tests/inference/test_hybrid_model.py runs one)."""

from __future__ import annotations

import pytest

from logitsmatch.rank.weights_writer import drawn_name


@pytest.mark.parametrize("name, drawn", [
    ("decoder.layers.0.mixer.conv1d_weight", "decoder.layers.0.mixer.conv1d.weight"),  # 0.17+ -> 0.15/0.16
    ("decoder.layers.12.mixer.conv1d_bias", "decoder.layers.12.mixer.conv1d.bias"),
    ("decoder.layers.0.mixer.conv1d.weight", "decoder.layers.0.mixer.conv1d.weight"),
    ("decoder.layers.0.mixer.in_proj.weight", "decoder.layers.0.mixer.in_proj.weight"),
    ("decoder.layers.1.self_attention.linear_qkv.weight", "decoder.layers.1.self_attention.linear_qkv.weight"),
])
def test_a_renamed_parameter_is_drawn_under_its_older_name(name, drawn):
    assert drawn_name(name) == drawn
