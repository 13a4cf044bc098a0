"""Build megatron-core's Mamba hybrid model (``MambaModel``) from a run plan's architecture, the sibling
of ``model_builder.build_gpt_model`` for Megatron-LM's ``--model-provider hybrid`` cases.

The layer pattern is Megatron's own (``--hybrid-layer-pattern``; 0.15-0.17 call it
``hybrid_override_pattern``): one symbol per layer, ``M`` Mamba, ``*`` attention, ``-`` MLP, ``E`` MoE.
megatron-core's ``MambaStack`` allocates the layers from it. Megatron-LM's spec
(``hybrid_stack_spec`` / ``mamba_stack_spec``) is built from Transformer Engine layers, with each
layer's norm fused into its first linear; without CUDA this builds the same stack from
megatron-core's local layers, the norm a separate module in front (what the GPT local spec does too).
The Mamba mixer's kernels come from ``cpu_mamba`` where CUDA is unavailable.
"""

from __future__ import annotations

import torch

from logitsmatch.rank.model_builder import DTYPES, padded_vocab_size, transformer_config

# Architecture keys -> TransformerConfig fields of the Mamba mixer (--mamba-state-dim, --mamba-head-dim,
# --mamba-num-groups, --mamba-num-heads); a key the plan lacks keeps megatron-core's default.
MAMBA_CONFIG_FIELDS = {
    "mamba_state_dim": "mamba_state_dim",
    "mamba_head_dim": "mamba_head_dim",
    "mamba_num_groups": "mamba_num_groups",
    "mamba_num_heads": "mamba_num_heads",
}


def hybrid_local_stack_spec(normalization: str):
    """megatron-core's hybrid stack from its local layers: Mamba (norm, mixer), attention (norm,
    self-attention) and MLP (norm, MLP) layers, as ``mamba_stack_spec`` has them with TE fused norms."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.ssm.mamba_layer import MambaLayer, MambaLayerSubmodules
    from megatron.core.ssm.mamba_mixer import MambaMixer, MambaMixerSubmodules
    from megatron.core.ssm.mlp_layer import MLPLayer
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    try:  # 0.18+: the hybrid stack; 0.15-0.17: the same stack under its Mamba name
        from megatron.core.models.hybrid.hybrid_block import HybridStack as Stack
        from megatron.core.models.hybrid.hybrid_block import HybridStackSubmodules as StackSubmodules
    except ImportError:
        from megatron.core.ssm.mamba_block import MambaStack as Stack
        from megatron.core.ssm.mamba_block import MambaStackSubmodules as StackSubmodules

    gpt = get_gpt_layer_local_spec(normalization=normalization).submodules
    norm = gpt.input_layernorm
    return ModuleSpec(
        module=Stack,
        submodules=StackSubmodules(
            mamba_layer=ModuleSpec(module=MambaLayer, submodules=MambaLayerSubmodules(
                norm=norm,
                mixer=ModuleSpec(module=MambaMixer, submodules=MambaMixerSubmodules(
                    in_proj=ColumnParallelLinear, out_proj=RowParallelLinear)),
                mamba_bda=get_bias_dropout_add)),
            attention_layer=ModuleSpec(module=TransformerLayer, submodules=TransformerLayerSubmodules(
                input_layernorm=norm, self_attention=gpt.self_attention, self_attn_bda=get_bias_dropout_add)),
            mlp_layer=ModuleSpec(module=MLPLayer, submodules=TransformerLayerSubmodules(
                pre_mlp_layernorm=norm, mlp=gpt.mlp, mlp_bda=get_bias_dropout_add)),
        ),
    )


def hybrid_config(arch: dict, parallel: dict, dtype_name: str, layer_spec: str = "local"):
    """``transformer_config`` with the pattern's layer count and the Mamba mixer's sizes."""
    config = transformer_config({**arch, "num_layers": len(arch["hybrid_layer_pattern"])}, parallel, dtype_name,
                                layer_spec)
    for key, field in MAMBA_CONFIG_FIELDS.items():
        if arch.get(key) is not None:
            setattr(config, field, arch[key])
    return config


def build_hybrid_model(arch: dict, parallel: dict, dtype_name: str, vocab_size: int, layer_spec: str = "local"):
    """MambaModel on this rank, in eval mode, in the plan's dtype (TP1 / PP1: what the hybrid cases run)."""
    if layer_spec != "local":
        raise ValueError(f"logitsmatch builds the hybrid stack from megatron-core's local layers, not {layer_spec!r}")
    try:  # 0.18+ (MambaModel is its deprecated alias there)
        from megatron.core.models.hybrid.hybrid_model import HybridModel as Model

        spec_argument, pattern_argument = "hybrid_stack_spec", "hybrid_layer_pattern"
    except ImportError:
        from megatron.core.models.mamba.mamba_model import MambaModel as Model

        spec_argument, pattern_argument = "mamba_stack_spec", "hybrid_override_pattern"
    config = hybrid_config(arch, parallel, dtype_name, layer_spec)
    model = Model(
        config=config,
        **{spec_argument: hybrid_local_stack_spec(arch["normalization"])},
        vocab_size=padded_vocab_size(vocab_size, parallel["tensor"]),
        max_sequence_length=arch["max_position_embeddings"],
        parallel_output=True,
        share_embeddings_and_output_weights=arch["share_embeddings_and_output_weights"],
        position_embedding_type=arch["position_embedding_type"],
        **{pattern_argument: arch["hybrid_layer_pattern"]},
    )
    model = model.to(device=torch.cuda.current_device() if torch.cuda.is_available() else "cpu",
                     dtype=DTYPES[dtype_name])
    model.eval()
    return model
