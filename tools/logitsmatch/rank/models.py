"""The plan's model: which megatron-core model class a run builds, from its architecture."""

from __future__ import annotations

from logitsmatch.rank.hybrid_builder import build_hybrid_model
from logitsmatch.rank.model_builder import build_gpt_model


def is_hybrid(arch: dict) -> bool:
    """A Mamba hybrid: Megatron-LM's --model-provider hybrid, its layers from a --hybrid-layer-pattern."""
    return arch.get("model_provider") == "hybrid"


def build_model(arch: dict, parallel: dict, dtype_name: str, vocab_size: int, layer_spec: str = "local",
                moe: dict | None = None):
    """megatron-core's MambaModel for a hybrid (``hybrid_builder``), else its GPTModel (``model_builder``)."""
    if is_hybrid(arch):
        if moe:
            raise ValueError("logitsmatch builds no MoE layers into a hybrid model")
        return build_hybrid_model(arch, parallel, dtype_name, vocab_size, layer_spec)
    return build_gpt_model(arch, parallel, dtype_name, vocab_size, layer_spec, moe)
