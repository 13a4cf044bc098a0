"""Megatron torch_dist checkpoints with torch: read their args, load weights, save.

User checkpoints and logitsmatch's synthetic ones share this path: both are
laid out as Megatron training writes them (``latest_checkpointed_iteration.txt``
+ ``iter_NNNNNNN/``), keep the model under the ``model`` key and their
arguments as an ``argparse.Namespace`` under ``args`` in ``common.pt``. Finding
the iteration folder and what the args mean need no torch: ``checkpoint_args``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from logitsmatch.checkpoint_args import TRACKER_FILE, args_namespace
from logitsmatch.errors import BadInput


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
            reason = (
                "not a torch file that weights_only=True loading accepts (garbage, or objects beyond tensors and args)"
            )
        raise BadInput(
            f"checkpoint {checkpoint_dir}: cannot read its common state: {type(exc).__name__}: {reason}"
        ) from None
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
    """A TP1 model (GPTModel, or MambaModel for a hybrid) in a one-process gloo world on loopback
    (for writing checkpoints)."""
    import os

    import torch
    from megatron.core import parallel_state

    from logitsmatch.rank import cpu_standins
    from logitsmatch.rank.models import build_model, is_hybrid

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not torch.cuda.is_available():
        cpu_standins.install_torch_standins()
        if is_hybrid(arch):
            from logitsmatch.rank import cpu_mamba

            cpu_standins.install_mamba_standins()
            cpu_mamba.local_final_norm()
    # One process: an in-memory store, so nothing listens on any interface.
    torch.distributed.init_process_group(backend="gloo", store=torch.distributed.HashStore(), world_size=1, rank=0)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    from megatron.core.tensor_parallel import random as tp_random

    tp_random.initialize_rng_tracker(inference_rng_tracker=True)  # the Mamba mixer forks it while it builds
    return build_model(arch, {"tensor": 1, "pipeline": 1}, "float32", vocab_size)


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
