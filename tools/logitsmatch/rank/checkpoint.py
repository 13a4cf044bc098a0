"""Megatron torch_dist checkpoints: locate, read their args, load weights.

User checkpoints and logitsmatch's synthetic ones share this path: both are
laid out as Megatron training writes them (``latest_checkpointed_iteration.txt``
+ ``iter_NNNNNNN/``), keep the model under the ``model`` key and their
arguments as an ``argparse.Namespace`` under ``args`` in ``common.pt``.
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


def read_checkpoint_args(checkpoint_dir: Path) -> argparse.Namespace | None:
    """The Namespace stored under ``args``, loaded with ``weights_only=True``."""
    import warnings

    import torch

    with warnings.catch_warnings():  # megatron-core's import-time notices would bury the one-line error
        warnings.simplefilter("ignore")
        from megatron.core import dist_checkpointing

    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        common = dist_checkpointing.load_common_state_dict(str(checkpoint_dir))
    except Exception as exc:  # truncated, garbage or unsafe (weights_only refuses it) files
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        if "Weights only load failed" in reason:
            reason = "not a torch file that weights_only=True loading accepts (garbage, or objects beyond tensors and args)"
        raise BadInput(f"checkpoint {checkpoint_dir}: cannot read its common state: {type(exc).__name__}: {reason}") from None
    args = common.get("args") if isinstance(common, dict) else None
    if args is not None and not isinstance(args, argparse.Namespace):
        raise BadInput(f"checkpoint {checkpoint_dir}: 'args' is {type(args).__name__}, expected argparse.Namespace")
    return args


def load_model_weights(model, checkpoint_dir: Path, strict: bool = True) -> None:
    """Load this rank's shard through megatron-core's dist_checkpointing."""
    import torch
    from megatron.core import dist_checkpointing

    torch.serialization.add_safe_globals([argparse.Namespace])
    sharded = {"model": model.sharded_state_dict()}
    loaded = dist_checkpointing.load(sharded, str(checkpoint_dir))
    model.load_state_dict(loaded["model"], strict=strict)


def single_process_model(arch: dict, vocab_size: int):
    """A TP1 GPTModel in a one-process gloo world on loopback (for writing checkpoints)."""
    import os

    import torch
    from megatron.core import parallel_state

    from logitsmatch.rank import cpu_standins
    from logitsmatch.rank.model_builder import build_gpt_model

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not torch.cuda.is_available():
        cpu_standins.install_torch_standins()
    # One process: an in-memory store, so nothing listens on any interface.
    torch.distributed.init_process_group(backend="gloo", store=torch.distributed.HashStore(), world_size=1, rank=0)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    return build_gpt_model(arch, {"tensor": 1, "pipeline": 1}, "float32", vocab_size)


def save_checkpoint(model, arch: dict, vocab_size: int, out_dir: Path) -> None:
    """Save as Megatron training does: tracker file, iter_0000001/, model + args."""
    from megatron.core import dist_checkpointing

    from logitsmatch.rank.model_builder import padded_vocab_size

    iteration_dir = out_dir / "iter_0000001"
    iteration_dir.mkdir(parents=True)
    state = {
        "model": model.sharded_state_dict(),
        "args": args_namespace(arch, padded_vocab_size(vocab_size, 1), 1),
        "checkpoint_version": 3.0,
        "iteration": 1,
    }
    dist_checkpointing.save(state, str(iteration_dir))
    (out_dir / TRACKER_FILE).write_text("1")
