"""rank.model_builder: the platform's decisions become megatron-core's own config and layer spec."""

from __future__ import annotations

import pytest

from logitsmatch.suites import load_architecture


@pytest.fixture
def synthetic_arch(project):
    return load_architecture(project, "minitron_583m")  # LayerNorm, no biases


def test_transformer_config_mapping(synthetic_arch):
    import torch
    from megatron.core.transformer.enums import AttnBackend

    from logitsmatch.rank.model_builder import transformer_config

    gpu = transformer_config(
        synthetic_arch,
        {"tensor": 8, "pipeline": 1, "sequence_parallel": True, "deterministic_mode": True,
         "attention_backend": "flash", "inference_fuse_tp_communication": False},
        "bfloat16",
        "transformer_engine",
    )
    assert gpu.params_dtype == torch.bfloat16 and gpu.bf16 and not gpu.fp16
    assert gpu.sequence_parallel and gpu.deterministic_mode
    assert gpu.tensor_model_parallel_size == 8
    assert gpu.attention_backend == AttnBackend.flash
    assert gpu.transformer_impl == "transformer_engine"
    cpu = transformer_config(
        synthetic_arch, {"tensor": 8, "pipeline": 1, "sequence_parallel": False, "deterministic_mode": True}, "float32"
    )
    assert cpu.params_dtype == torch.float32 and not cpu.bf16
    assert not cpu.sequence_parallel and cpu.deterministic_mode
    assert cpu.transformer_impl == "local" and cpu.attention_backend == AttnBackend.auto


def test_local_spec_is_megatrons_local_spec(synthetic_arch):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from logitsmatch.rank.model_builder import layer_spec_module

    ours = layer_spec_module("local", synthetic_arch)
    theirs = get_gpt_layer_local_spec(normalization="LayerNorm")
    assert ours.module is theirs.module
    assert ours.submodules.self_attention.module is theirs.submodules.self_attention.module
    with pytest.raises(ValueError, match="unknown layer spec"):
        layer_spec_module("fancy", synthetic_arch)
