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


def mamba_inference_state(model, plan: dict) -> dict:
    """The dynamic context's ``mamba_inference_state_config`` for a hybrid (nothing for a GPTModel): its conv / SSM
    state shapes and layer types, as Megatron-LM passes them, and from megatron-core 0.17 the plan's state dtypes
    (--mamba-inference-*-states-dtype; before 0.17 the states follow the parameters, and the run was refused
    unless that is what the suite asks: flows.run_suite.mamba_states_refusal)."""
    if not is_hybrid(plan["architecture"]):
        return {}
    try:
        from megatron.core.inference.config import MambaInferenceStateConfig
    except ImportError:  # 0.15 / 0.16
        from megatron.core.utils import get_mamba_inference_state_config_from_model

        return {"mamba_inference_state_config": get_mamba_inference_state_config_from_model(model)}
    from logitsmatch.rank.model_builder import DTYPES

    states = plan["inference"]["mamba_states_dtype"]
    return {"mamba_inference_state_config": MambaInferenceStateConfig.from_model(
        model, conv_states_dtype=DTYPES[states["conv"]], ssm_states_dtype=DTYPES[states["ssm"]])}
