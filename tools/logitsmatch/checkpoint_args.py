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
from logitsmatch.model_args import FLAGS, switched_off

TRACKER_FILE = "latest_checkpointed_iteration.txt"

# Megatron's stored argument -> our architecture key: the MODEL_ARGS flags that state a key (Megatron stores
# each under the flag's name), then the stored arguments no flag of ours states. A flag that switches its key
# off is not among them: Megatron stores --disable-bias-linear as add_bias_linear (listed below), and
# --untie-embeddings-and-output-weights is the negation of our key, translated where it is used.
_ARCH_FROM_ARGS = {
    flag.removeprefix("--").replace("-", "_"): spec.architecture
    for flag, spec in FLAGS.items()
    if spec.architecture and spec.read_as is not switched_off
} | {
    "norm_epsilon": "layernorm_epsilon",
    "add_bias_linear": "add_bias_linear",
    "add_qkv_bias": "add_qkv_bias",
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
