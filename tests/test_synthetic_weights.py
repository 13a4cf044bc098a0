"""Synthetic weights are a pure function of (seed, name, shape), computed by numpy."""

from __future__ import annotations

import numpy as np

from logitsmatch.run.synthetic_weights import parameter_values, weights_digest


def test_values_depend_only_on_seed_name_and_shape():
    a = parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000)
    b = parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, parameter_values("decoder.layers.1.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000))
    assert not np.array_equal(a, parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 99, 2, 1000))


def test_value_rules():
    norm = parameter_values("decoder.final_layernorm.weight", (4096,), 1, 2, 1000)
    assert abs(norm.mean() - 1.0) < 0.01
    proj = parameter_values("decoder.layers.0.self_attention.linear_proj.weight", (256, 256), 1, 8, 1000)
    assert abs(proj.std() - 0.02 / 4) < 1e-3
    output = parameter_values("output_layer.weight", (2048, 64), 1, 2, 1000)
    assert output[:1000].std() < 0.2 * output[1000:].std()


def test_stream_is_stable():
    """Pins numpy's PCG64 stream: if this changes, every synthetic golden changes with it."""
    values = parameter_values("embedding.word_embeddings.weight", (4, 3), 1234, 2, 0)
    digest = weights_digest([("embedding.word_embeddings.weight", values)])
    assert digest == "6b377ffe95917c0e91fec59f02f03e26d8b0a1272b05abb05587d3aa9f1925f5"
