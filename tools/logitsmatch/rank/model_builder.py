"""Build megatron-core's GPTModel from a run plan's architecture (inside a toolchain venv).

The same builder serves the TP1 synthetic-weights writer and the TP-N ranks,
so a checkpoint written by one is loaded by the other through
``dist_checkpointing`` exactly as a user's checkpoint would be.
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def padded_vocab_size(vocab_size: int, tensor_parallel: int, divisible_by: int = 128) -> int:
    """Megatron's padding rule: a multiple of ``divisible_by`` x TP."""
    multiple = divisible_by * tensor_parallel
    return ((vocab_size + multiple - 1) // multiple) * multiple


def _activation(name: str):
    import torch.nn.functional as F
    from megatron.core.activations import squared_relu

    return {"gelu": F.gelu, "squared_relu": squared_relu, "silu": F.silu}[name]


def platform_config_kwargs(config_class, parallel: dict, layer_spec: str) -> dict:
    """The platform's choices as TransformerConfig fields, where this megatron-core release has them.

    --transformer-impl -> ``transformer_impl`` (the spec actually built), --attention-backend ->
    ``attention_backend`` (AttnBackend), --inference-fuse-tp-communication ->
    ``inference_fuse_tp_communication``. Older releases lack some fields; a requested
    feature a release lacks is an error, not a silent default.
    """
    import dataclasses

    fields = {item.name for item in dataclasses.fields(config_class)}
    kwargs = {}
    if "transformer_impl" in fields:
        kwargs["transformer_impl"] = layer_spec
    elif layer_spec == "inference_optimized":
        raise ValueError("this megatron-core release has no inference_optimized transformer_impl")
    backend = parallel.get("attention_backend")
    if backend is not None:
        from megatron.core.transformer.enums import AttnBackend

        kwargs["attention_backend"] = AttnBackend[backend]
    if parallel.get("batch_invariant_mode"):  # --batch-invariant, where the harness found the field (GPU only)
        kwargs["batch_invariant_mode"] = True
    if parallel.get("inference_fuse_tp_communication"):
        if "inference_fuse_tp_communication" not in fields:
            raise ValueError("this megatron-core release has no inference_fuse_tp_communication")
        kwargs["inference_fuse_tp_communication"] = True
    return kwargs


def transformer_config(arch: dict, parallel: dict, dtype_name: str, layer_spec: str = "local", moe: dict | None = None):
    """A TransformerConfig for inference: no dropout, weights come from a checkpoint.

    Flag mapping: --bf16/--fp16 -> ``params_dtype`` + ``bf16``/``fp16``;
    --tensor-model-parallel-size / --pipeline-model-parallel-size -> the parallel sizes
    (``pipeline_dtype``, which PP > 1 requires, is the run's dtype); --sequence-parallel ->
    ``sequence_parallel``; --deterministic-mode -> ``deterministic_mode``; and see
    ``platform_config_kwargs`` and ``moe_config_kwargs``.
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = DTYPES[dtype_name]
    return TransformerConfig(
        num_layers=arch["num_layers"],
        hidden_size=arch["hidden_size"],
        ffn_hidden_size=arch["ffn_hidden_size"],
        num_attention_heads=arch["num_attention_heads"],
        num_query_groups=arch["num_query_groups"],
        kv_channels=arch["kv_channels"],
        normalization=arch["normalization"],
        layernorm_epsilon=arch["layernorm_epsilon"],
        activation_func=_activation(arch["activation"]),
        gated_linear_unit=arch["gated_linear_unit"],
        add_bias_linear=arch["add_bias_linear"],
        add_qkv_bias=arch["add_qkv_bias"],
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=arch["init_method_std"],
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        tensor_model_parallel_size=parallel["tensor"],
        pipeline_model_parallel_size=parallel["pipeline"],
        pipeline_dtype=dtype,
        sequence_parallel=parallel.get("sequence_parallel", False),
        use_cpu_initialization=not torch.cuda.is_available(),
        perform_initialization=False,
        deterministic_mode=parallel.get("deterministic_mode", False),
        **moe_config_kwargs(TransformerConfig, arch, parallel, moe),
        **platform_config_kwargs(TransformerConfig, parallel, layer_spec),
    )


def moe_config_kwargs(config_class, arch: dict, parallel: dict, moe: dict | None) -> dict:
    """MoE TransformerConfig fields, for a model with experts (else none).

    Flag mapping: --num-experts -> ``num_moe_experts``; --moe-router-topk,
    --moe-ffn-hidden-size, --moe-shared-expert-intermediate-size, --moe-router-score-function,
    --moe-router-load-balancing-type, --moe-token-dispatcher-type, --moe-grouped-gemm,
    --moe-enable-routing-replay and --moe-pad-experts-for-cuda-graph-inference -> the ``moe_*`` fields of the
    same names;
    --expert-model-parallel-size / --expert-tensor-parallel-size -> ``expert_model_parallel_size``
    / ``expert_tensor_parallel_size``. The router's loss coefficients stay at megatron's defaults:
    they act only in training.
    """
    if not arch.get("num_experts"):
        return {}
    import dataclasses

    fields = {item.name for item in dataclasses.fields(config_class)}
    moe = moe or {}
    kwargs = dict(
        num_moe_experts=arch["num_experts"],
        moe_router_topk=arch["moe_router_topk"],
        moe_ffn_hidden_size=arch["moe_ffn_hidden_size"],
        moe_shared_expert_intermediate_size=arch.get("moe_shared_expert_intermediate_size"),
        moe_router_score_function=arch.get("moe_router_score_function", "softmax"),
        moe_router_load_balancing_type=moe.get("router_load_balancing_type", "aux_loss"),
        moe_token_dispatcher_type=moe.get("token_dispatcher_type", "allgather"),
        moe_grouped_gemm=moe.get("grouped_gemm", False),
        expert_model_parallel_size=parallel.get("expert", 1),
        expert_tensor_parallel_size=parallel.get("expert_tensor", parallel["tensor"]),
    )
    if moe.get("enable_routing_replay"):
        if "moe_enable_routing_replay" not in fields:
            raise ValueError("this megatron-core release has no moe_enable_routing_replay")
        kwargs["moe_enable_routing_replay"] = True
    if moe.get("pad_experts_for_cuda_graph_inference") and "moe_pad_experts_for_cuda_graph_inference" in fields:
        kwargs["moe_pad_experts_for_cuda_graph_inference"] = True  # 0.17+; 0.16 has it in InferenceWrapperConfig
    if not torch.cuda.is_available() and kwargs["expert_model_parallel_size"] > 1 and (
        "inference_moe_token_dispatcher_type" in fields
    ):
        # 0.18+: DynamicInferenceContext pre-allocates the inference-optimized EP dispatcher's buffers
        # whenever EP > 1, by default ('nvls') in NVLink symmetric memory, which needs CUDA. The layers
        # built here (local spec; TE on GPUs) never use them: they run the training alltoall dispatcher.
        # 'nccl' allocates one host int32 instead. No numerics change.
        kwargs["inference_moe_token_dispatcher_type"] = "nccl"
    return kwargs


def layer_spec_module(layer_spec: str, arch: dict, moe: dict | None = None):
    """megatron-core's ModuleSpec for the platform's layer spec (with MoE layers when the model has experts:
    SequentialMLP in the local spec, TEGroupedMLP with --moe-grouped-gemm in the Transformer Engine spec)."""
    from megatron.core.models.gpt import gpt_layer_specs

    experts = {}
    if arch.get("num_experts"):
        experts = {"num_experts": arch["num_experts"], "moe_grouped_gemm": bool((moe or {}).get("grouped_gemm"))}
    if layer_spec == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(**experts)
    if layer_spec == "inference_optimized":
        if experts:
            raise ValueError("megatron-core's inference_optimized spec has no MoE layers")
        return gpt_layer_specs.get_gpt_layer_with_inference_spec()
    if layer_spec == "local":
        return gpt_layer_specs.get_gpt_layer_local_spec(normalization=arch["normalization"], **experts)
    raise ValueError(f"unknown layer spec {layer_spec!r}")


def build_gpt_model(arch: dict, parallel: dict, dtype_name: str, vocab_size: int, layer_spec: str = "local",
                    moe: dict | None = None):
    """GPTModel on this rank's shard, in eval mode, in the plan's dtype.

    ``layer_spec``: ``local`` (megatron-core's own layers), ``transformer_engine``
    (Transformer Engine layers) or ``inference_optimized`` (megatron-core's
    inference spec over Transformer Engine), as the platform decided.

    Pipeline stages, as Megatron-LM's model provider builds them: the embedding on the first
    stage, the final norm and output layer on the last; megatron's TransformerBlock builds this
    stage's num_layers / PP layers with their global layer numbers.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt.gpt_model import GPTModel

    config = transformer_config(arch, parallel, dtype_name, layer_spec, moe)
    spec = layer_spec_module(layer_spec, arch, moe)
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab_size(vocab_size, parallel["tensor"]),
        max_sequence_length=arch["max_position_embeddings"],
        pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=True),
        post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=True),
        parallel_output=True,
        share_embeddings_and_output_weights=arch["share_embeddings_and_output_weights"],
        position_embedding_type=arch["position_embedding_type"],
        rotary_percent=arch["rotary_percent"],
        rotary_base=arch["rotary_base"],
    )
    model = model.to(
        device=torch.cuda.current_device() if torch.cuda.is_available() else "cpu", dtype=DTYPES[dtype_name]
    )
    model.eval()
    return model
