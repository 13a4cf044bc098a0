"""Megatron torch_dist checkpoints without torch: where one is, and what its stored args mean.

Megatron training lays a checkpoint out as ``latest_checkpointed_iteration.txt`` +
``iter_NNNNNNN/`` and keeps its arguments as an ``argparse.Namespace`` under ``args`` in
``common.pt``. Reading that file needs torch (``rank.checkpoint.read_checkpoint_args``); finding
the iteration folder and translating the args to our architecture does not, so the harness
(``run.plan``) and the ranks share this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from logitsmatch.errors import BadInput

TRACKER_FILE = "latest_checkpointed_iteration.txt"

# Megatron argument name -> logitsmatch architecture key (same name unless listed).
_ARCH_FROM_ARGS = {
    "num_layers": "num_layers",
    "hidden_size": "hidden_size",
    "ffn_hidden_size": "ffn_hidden_size",
    "num_attention_heads": "num_attention_heads",
    "kv_channels": "kv_channels",
    "normalization": "normalization",
    "norm_epsilon": "layernorm_epsilon",
    "swiglu": "gated_linear_unit",
    "add_bias_linear": "add_bias_linear",
    "add_qkv_bias": "add_qkv_bias",
    "position_embedding_type": "position_embedding_type",
    "rotary_percent": "rotary_percent",
    "rotary_base": "rotary_base",
    "max_position_embeddings": "max_position_embeddings",
    "init_method_std": "init_method_std",
    "num_experts": "num_experts",
    "moe_router_topk": "moe_router_topk",
    "moe_ffn_hidden_size": "moe_ffn_hidden_size",
    "moe_shared_expert_intermediate_size": "moe_shared_expert_intermediate_size",
    "moe_router_score_function": "moe_router_score_function",
}


def resolve_checkpoint_dir(load_path: str | Path) -> Path:
    """The iteration directory dist_checkpointing reads, following Megatron's tracker file."""
    root = Path(load_path)
    if not root.is_dir():
        raise BadInput(f"checkpoint path does not exist or is not a directory: {root}")
    tracker = root / TRACKER_FILE
    if tracker.is_file():
        text = tracker.read_text().strip()
        if text == "release":
            directory = root / "release"
        elif text.isdigit():
            directory = root / f"iter_{int(text):07d}"
        else:
            raise BadInput(f"{tracker}: expected an iteration number or 'release', got {text[:40]!r}")
    else:
        directory = root
    if not (directory / "metadata.json").is_file():
        raise BadInput(f"not a torch_dist checkpoint (no metadata.json): {directory}")
    return directory


def args_namespace(arch: dict, vocab_size: int, tensor_parallel: int) -> argparse.Namespace:
    """The ``args`` a Megatron training run would have stored for this architecture."""
    inverse = {ours: theirs for theirs, ours in _ARCH_FROM_ARGS.items()}
    values = {inverse.get(key, key): value for key, value in arch.items()}
    values.update(
        group_query_attention=arch["num_query_groups"] != arch["num_attention_heads"],
        num_query_groups=arch["num_query_groups"],
        squared_relu=arch["activation"] == "squared_relu",
        untie_embeddings_and_output_weights=not arch["share_embeddings_and_output_weights"],
        padded_vocab_size=vocab_size,
        tensor_model_parallel_size=tensor_parallel,
        ckpt_format="torch_dist",
    )
    return argparse.Namespace(**values)


def architecture_from_args(args: argparse.Namespace) -> dict:
    """Our architecture dict from a Megatron checkpoint's stored arguments."""
    stored = vars(args)
    arch = {ours: stored[theirs] for theirs, ours in _ARCH_FROM_ARGS.items() if theirs in stored}
    heads = stored.get("num_attention_heads")
    arch["num_query_groups"] = stored.get("num_query_groups") if stored.get("group_query_attention") else heads
    if arch.get("kv_channels") is None and heads:
        arch["kv_channels"] = stored["hidden_size"] // heads
    arch["activation"] = "squared_relu" if stored.get("squared_relu") else ("silu" if stored.get("swiglu") else "gelu")
    arch["share_embeddings_and_output_weights"] = not stored.get("untie_embeddings_and_output_weights", False)
    return arch
