"""Resolve a suite x toolchain x platform into the run plan the ranks execute.

The plan is plain JSON: every decision (architecture, checkpoint, tokenizer,
dtype, KV buffer, bind address) is made here, once, in the harness, and
recorded; the rank worker only carries it out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.model_args import FlagReport, classify
from logitsmatch.run.platforms import Platform
from logitsmatch.run.runfiles import RunDir
from logitsmatch.suites import Suite, load_architecture

NUM_SPECIAL_TOKENS = 1000
BLOCK_SIZE_TOKENS = 256


@dataclass
class CheckpointChoice:
    """Where the weights come from: a user checkpoint, or a synthetic one to generate."""

    load_path: Path | None  # None: synthetic
    architecture: dict
    synthetic_spec: dict | None


def _bool(value) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def tokenizer_spec(suite: Suite, project: Path, user_checkpoint: bool, override: str | None) -> dict:
    """TikTokenizer file and its vocab size (1000 specials + the file's entries)."""
    if suite.arg("--tokenizer-type", "TikTokenizer") != "TikTokenizer":
        raise BadInput(f"suite {suite.name}: only --tokenizer-type TikTokenizer is supported")
    path = override or (suite.arg("--tokenizer-model") if user_checkpoint else None)
    path = Path(path) if path else project / suite.tokenizer_model
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"tokenizer model not found: {path}") from None
    except ValueError:
        raise BadInput(f"tokenizer model is not valid JSON: {path}") from None
    if not isinstance(entries, list) or len(entries) < 256:
        raise BadInput(f"tokenizer model {path}: expected a JSON list of at least 256 tiktoken ranks")
    return {
        "path": str(path),
        "pattern": str(suite.arg("--tiktoken-pattern", "v2")),
        "vocab_size": NUM_SPECIAL_TOKENS + len(entries),
        "num_special_tokens": NUM_SPECIAL_TOKENS,
    }


def choose_checkpoint(suite: Suite, project: Path, checkpoint: str | None, tokenizer: dict) -> CheckpointChoice:
    """A user checkpoint (--checkpoint, or the suite's --load with CHECKPOINT_LOAD_PATH set) or synthetic."""
    load = checkpoint or suite.arg("--load")
    if load:
        # The one place the harness process touches torch: a user checkpoint's stored args.
        from logitsmatch.rank.checkpoint import architecture_from_args, read_checkpoint_args, resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(load)
        args = read_checkpoint_args(directory)
        if args is None:
            raise BadInput(f"checkpoint {directory} stores no 'args'; logitsmatch needs them (--use-checkpoint-args)")
        return CheckpointChoice(directory, architecture_from_args(args), None)
    arch = load_architecture(project, suite.synthetic_model)
    spec = {
        "architecture": arch,
        "vocab_size": tokenizer["vocab_size"],
        "num_special_tokens": tokenizer["num_special_tokens"],
        "seed": suite.synthetic_seed,
    }
    return CheckpointChoice(None, arch, spec)


def expected_weights(suite: Suite, project: Path) -> dict:
    """The weights a run of the suite uses now, as provenance records them (without any rank work):
    the checkpoint the suite's --load names when its variables are set, else its synthetic spec."""
    load = suite.arg("--load")
    if load:
        from logitsmatch.rank.checkpoint import resolve_checkpoint_dir

        return {"source": "checkpoint", "path": str(resolve_checkpoint_dir(load))}
    from logitsmatch.run.synthetic_weights import GENERATOR_VERSION

    choice = choose_checkpoint(suite, project, None, tokenizer_spec(suite, project, False, None))
    return {"source": "synthetic", "spec": choice.synthetic_spec, "generator_version": GENERATOR_VERSION}


def check_shape(suite: Suite, arch: dict) -> None:
    """The suite's shape flags must describe the model actually loaded."""
    for flag, key in (
        ("--num-layers", "num_layers"),
        ("--hidden-size", "hidden_size"),
        ("--num-attention-heads", "num_attention_heads"),
    ):
        wanted = suite.model_args.get(flag)
        if wanted is not None and arch.get(key) != wanted:
            raise BadInput(f"suite {suite.name} says {flag} {wanted} but the checkpoint has {key}={arch.get(key)}")


def platform_flags(model_args: dict, platform: Platform, decision) -> FlagReport:
    """The flag report, with the platform's own reasons for what it could not apply here."""
    flags = classify(model_args, platform.honours, platform.label(model_args))
    for flag in decision.applied:
        if flag in flags.not_applied:
            del flags.not_applied[flag]
            flags.applied.append(flag)
    for flag, why in decision.not_applied.items():
        if flag in flags.applied:
            flags.applied.remove(flag)
        flags.not_applied[flag] = why
    return flags


def build_plan(
    suite: Suite,
    platform: Platform,
    choice: CheckpointChoice,
    checkpoint_dir: Path,
    tokenizer: dict,
    bind_host: str,
) -> tuple[dict, FlagReport]:
    args = suite.model_args
    pipeline = int(args.get("--pipeline-model-parallel-size", 1))
    if pipeline != 1:
        raise BadInput(f"suite {suite.name}: pipeline parallel size {pipeline} is not supported yet (only 1)")
    arch = dict(choice.architecture)
    check_shape(suite, arch)
    if "--max-position-embeddings" in args:
        arch["max_position_embeddings"] = int(args["--max-position-embeddings"])
    decision = platform.decide(args, arch, pipeline)
    tensor = decision.tensor
    flags = platform_flags(args, platform, decision)
    max_seq = int(args.get("--inference-max-seq-length", 4096))
    platform_plan = dict(decision.plan)
    if platform.overridden:
        platform_plan["overrides"] = {
            "tensor_parallel": {"suite": int(args.get("--tensor-model-parallel-size", 1)), "run": tensor},
            "dtype": {"run": decision.dtype, "command_line": platform.dtype_override},
        }
    plan = {
        "suite": suite.name,
        "platform": platform_plan,
        "dtype": decision.dtype,
        "parallel": {
            "tensor": tensor,
            "pipeline": pipeline,
            "sequence_parallel": decision.sequence_parallel,
            "deterministic_mode": _bool(args.get("--deterministic-mode")),
            "inference_fuse_tp_communication": decision.fuse_tp_communication,
            "attention_backend": decision.attention_backend,
        },
        "world_size": tensor * pipeline,
        "architecture": arch,
        "vocab_size": tokenizer["vocab_size"],
        "seed": suite.synthetic_seed,
        "tokenizer": tokenizer,
        "checkpoint_dir": str(checkpoint_dir),
        "prompts": suite.prompts,
        "sampling": {
            "temperature": float(args.get("--temperature", 1.0)),
            "top_k": int(args.get("--top_k", 0)),
            "top_p": float(args.get("--top_p", 0.0)),
            "return_log_probs": _bool(args.get("--return-log-probs", False)),
            "num_tokens_to_generate": int(args.get("--num-tokens-to-generate", 30)),
        },
        "inference": {
            "max_sequence_length": max_seq,
            "buffer_size_gb": platform.kv_buffer_gb(args),
            "max_tokens": 16384,
            "block_size_tokens": BLOCK_SIZE_TOKENS,
            "max_requests": max(len(suite.prompts), 8),
            "enable_chunked_prefill": False,
            "use_flashinfer_fused_rope": decision.use_flashinfer_fused_rope,
            "enable_cuda_graph": False,  # not wired yet: reported as not applied (platforms.NOT_WIRED)
        },
        "network": {"bind_host": bind_host, "coordinator_port": None},
    }
    return plan, flags


CAPTURE_VALUE_BUDGET_BYTES = 200_000_000  # values kept per run (docs/capture_format.md)


def capture_spec(decode_steps: int, value_ranks: tuple[int, ...] = (0,), budget: int = CAPTURE_VALUE_BUDGET_BYTES) -> dict:
    """``plan["capture"]`` for ``logitsmatch run --capture``: prefill + ``decode_steps`` decode steps,
    digests on every rank, the values of the real token rows on ``value_ranks`` within ``budget``."""
    if decode_steps < 0:
        raise BadInput(f"--capture takes the number of decode steps to record (>= 0), got {decode_steps}")
    return {"decode_steps": decode_steps, "value_ranks": list(value_ranks), "value_budget_bytes": budget}


def comparable_plan(plan: dict) -> dict:
    """The plan without what differs between any two runs (folders, ports): what ``explain`` compares."""
    kept = {key: value for key, value in plan.items() if key not in ("checkpoint_dir", "network", "capture")}
    kept["tokenizer"] = {key: value for key, value in plan.get("tokenizer", {}).items() if key != "path"}
    return kept


def launch_env(suite: Suite, platform: Platform, run: RunDir, bind_host: str) -> dict[str, str]:
    """ENV_VARS of the suite plus what keeps ranks on loopback and single-threaded on CPU."""
    env = dict(suite.env_vars)
    env["TMPDIR"] = str(run.tmp)
    env["TORCH_EXTENSIONS_DIR"] = str(run.torch_extensions)
    if platform.stand_ins:
        env["OMP_NUM_THREADS"] = "1"
    if bind_host.startswith("127.") or bind_host == "localhost":
        loopback = os.environ.get("LOGITSMATCH_LOOPBACK_IFNAME", "lo")
        env["GLOO_SOCKET_IFNAME"] = loopback
        if platform.device == "cuda":
            # one node: NCCL's socket bootstrap stays on loopback too (NVLink/P2P carry the data)
            env["NCCL_SOCKET_IFNAME"] = os.environ.get("NCCL_SOCKET_IFNAME", loopback)
    return env
