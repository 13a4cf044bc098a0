"""Every MODEL_ARGS flag logitsmatch understands: what each platform does with it, what its value must be,
and which architecture key it states. Suites, the planner and the checkpoint reader all read this one table.

Megatron's case files pass flags to its training-argument parser. We accept
exactly the flags listed here: a flag not in the table is an error naming the
flag, never silently ignored. Each flag is one of:

* ``applied``   — mapped onto megatron-core objects on every platform;
* ``platform``  — applied where the platform honours it, otherwise reported
  as "not applied on platform <name>" with the reason;
* ``no-effect`` — has no influence on inference numerics (logging, training
  only); accepted and listed with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from logitsmatch.errors import BadInput


def switched_on(value) -> bool:
    """A store_true flag's value as a case file gives it: YAML true, or the text 'true'."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def switched_off(value) -> bool:
    """The key's value for a flag that turns its architecture key off (--disable-bias-linear: add_bias_linear)."""
    return not switched_on(value)


_READ_AS = {"int": int, "float": float, "text": str}


@dataclass(frozen=True)
class Flag:
    """One MODEL_ARGS flag.

    ``value`` and ``minimum`` are what ``load_suite`` requires of the flag's value, before anything runs:
    "int" or "float" (numeric strings count, as for Megatron's argparse) no smaller than ``minimum``, or
    "text"; None leaves the value unchecked there. ``architecture`` is the key of our architecture dict the
    flag states (a checkpoint's stored args name it as the flag does, dashes as underscores, unless the flag
    switches the key off: see checkpoint_args). ``compared``
    says how the planner checks it against the model actually loaded: "size" (a synthetic model the suite
    declares scaled down may differ) or "layout" (never); None: not compared. ``read_as`` turns the flag's
    value into the key's (default: the value's own type).
    """

    kind: str  # "applied" | "platform" | "no-effect"
    reason: str = ""
    value: str | None = None  # "int" | "float" | "text"
    minimum: int | float | None = None
    architecture: str | None = None
    compared: str | None = None  # "size" | "layout"
    read_as: Callable | None = None

    def read(self, value):
        """The flag's value as its architecture key's value."""
        return (self.read_as or _READ_AS[self.value])(value)


def _count(kind: str = "applied", minimum: int = 1, **spec) -> Flag:
    """A flag whose value is an integer >= ``minimum``."""
    return Flag(kind, value="int", minimum=minimum, **spec)


def _size(key: str) -> Flag:
    """An architecture size: an integer >= 1, compared with the model loaded (a scaled-down one may differ)."""
    return _count(architecture=key, compared="size")


def _layout(key: str, **spec) -> Flag:
    """An architecture feature the model loaded must have, even a scaled-down synthetic one."""
    return Flag("applied", architecture=key, compared="layout", **spec)


def _text(kind: str = "applied", reason: str = "", **spec) -> Flag:
    """A flag whose value is a string (a number counts: YAML reads some names as numbers)."""
    return Flag(kind, reason, value="text", **spec)


FLAGS: dict[str, Flag] = {
    # model shape (checked against the architecture actually loaded)
    "--num-layers": _size("num_layers"),
    "--hidden-size": _size("hidden_size"),
    "--num-attention-heads": _size("num_attention_heads"),
    "--max-position-embeddings": _count(architecture="max_position_embeddings"),
    "--use-mcore-models": Flag("applied"),
    # parallelism and numerics
    "--tensor-model-parallel-size": _count(),
    "--pipeline-model-parallel-size": _count(),
    "--deterministic-mode": Flag("applied"),
    "--bf16": Flag("platform", "CPU goldens are an fp32 reference; bf16 on CPU is not GPU bf16"),
    "--fp16": Flag("platform", "CPU goldens are an fp32 reference"),
    "--distributed-backend": _text("platform", "NCCL needs GPUs; CPU ranks talk over gloo"),
    "--transformer-impl": _text("platform", "Transformer Engine layers need CUDA; CPU uses the local spec"),
    "--sequence-parallel": Flag("platform", "sequence parallel needs the Transformer Engine spec"),
    "--attention-backend": _text("platform", "flash attention needs CUDA; CPU runs exact pure-torch paged attention"),
    "--inference-fuse-tp-communication": Flag("platform", "fused TP communication needs CUDA symmetric memory"),
    "--use-flashinfer-fused-rope": Flag("platform", "flashinfer needs CUDA"),
    "--enable-cuda-graph": Flag("platform", "CUDA graphs need CUDA"),
    "--cuda-graph-impl": _text(
        "platform", "CUDA graphs need CUDA: every step runs eagerly; the static driver's warmup request still runs"
    ),
    "--inference-dynamic-batching-num-cuda-graphs": Flag(
        "platform", "CUDA graphs need CUDA: none is captured, so no step is padded to a graph's batch size",
        value="int", minimum=-1,
    ),
    # which tracker forks the model-parallel CUDA RNG states: only dropout and weight initialisation draw from it
    "--te-rng-tracker": Flag("no-effect", "RNG tracker for dropout and initialisation (off, and loaded, at inference)"),
    "--inference-rng-tracker": Flag(
        "no-effect", "RNG tracker for dropout and initialisation (off, and loaded, at inference)"
    ),
    # inference and sampling
    "--prompts": Flag("applied"),
    "--temperature": Flag("applied", value="float", minimum=0.0),
    "--top_k": _count(minimum=0),
    "--top_p": Flag("applied", value="float", minimum=0.0),
    "--return-log-probs": Flag("applied"),
    "--top-n-logprobs": _count(minimum=0),
    "--stop-words": _text(),  # Megatron's nargs='+': the shell words of the value (run.plan.stop_words)
    "--num-tokens-to-generate": _count(),
    "--inference-max-seq-length": _count(),
    "--inference-dynamic-batching-buffer-size-gb": Flag(
        "platform", "KV-cache capacity only; the CPU profile caps it to fit 8 ranks in host memory",
        value="float", minimum=0.0,
    ),
    "--incoming-requests-per-step": Flag(
        "no-effect", "shapes Megatron's in-process driver; the ZMQ client submits every request at once"
    ),
    "--inference-logging-step-interval": Flag("no-effect", "engine logging only"),
    "--inference-repeat-n": Flag("no-effect", "repeats the run for throughput; the determinism check reruns instead"),
    "--max-tokens-to-oom": Flag("no-effect", "static-batching guard; the dynamic engine sizes by its buffer"),
    # checkpoint and tokenizer
    "--load": _text(),
    "--tokenizer-model": _text(),
    "--tokenizer-type": _text(),
    "--tiktoken-pattern": _text(),
    "--use-checkpoint-args": Flag("applied"),
    "--ckpt-format": Flag("applied"),
    "--auto-detect-ckpt-format": Flag("applied"),
    "--dist-ckpt-strictness": Flag("applied"),
    "--inference-ckpt-non-strict": Flag("applied"),
    "--no-load-optim": Flag("no-effect", "inference loads no optimizer state"),
    "--no-use-tokenizer-model-from-checkpoint-args": Flag("applied"),
    # training-only or logging
    "--micro-batch-size": Flag("no-effect", "training batch size"),
    "--seq-length": Flag("no-effect", "training sequence length; inference uses --inference-max-seq-length"),
    "--timing-log-level": Flag("no-effect", "logging"),
    "--log-interval": Flag("no-effect", "logging"),
    "--log-memory-to-tensorboard": Flag("no-effect", "logging"),
    "--log-num-zeros-in-grad": Flag("no-effect", "logging (training)"),
    "--log-validation-ppl-to-tensorboard": Flag("no-effect", "logging (training)"),
    "--log-timers-to-tensorboard": Flag("no-effect", "logging"),
    "--output-path": Flag("no-effect", "logitsmatch chooses where results go"),
    # architecture beyond the shape (checked against the architecture actually loaded)
    "--ffn-hidden-size": _size("ffn_hidden_size"),
    "--kv-channels": _size("kv_channels"),
    "--normalization": _layout("normalization", value="text"),
    "--swiglu": _layout("gated_linear_unit", read_as=switched_on),
    "--untie-embeddings-and-output-weights": _layout("share_embeddings_and_output_weights", read_as=switched_off),
    "--disable-bias-linear": _layout("add_bias_linear", read_as=switched_off),
    "--position-embedding-type": _layout("position_embedding_type", value="text"),
    "--rotary-base": _layout("rotary_base", read_as=float),
    "--rotary-percent": _layout("rotary_percent", read_as=float),
    "--init-method-std": Flag(
        "no-effect", "initialisation only; the weights come from the checkpoint", architecture="init_method_std"
    ),
    "--attention-dropout": Flag("no-effect", "dropout is off at inference"),
    "--hidden-dropout": Flag("no-effect", "dropout is off at inference"),
    # mixture of experts
    "--expert-model-parallel-size": _count(),
    "--expert-tensor-parallel-size": _count(),
    "--num-experts": _count(architecture="num_experts", compared="layout"),
    "--moe-router-topk": _count(architecture="moe_router_topk", compared="layout"),
    "--moe-ffn-hidden-size": _size("moe_ffn_hidden_size"),
    "--moe-shared-expert-intermediate-size": _size("moe_shared_expert_intermediate_size"),
    "--moe-router-score-function": _layout("moe_router_score_function", value="text"),
    "--moe-router-load-balancing-type": Flag("applied"),
    "--moe-token-dispatcher-type": _text(),
    "--moe-grouped-gemm": Flag(
        "platform", "grouped GEMM needs CUDA; CPU runs SequentialMLP, the same per-expert GEMMs one expert at a time"
    ),
    "--moe-aux-loss-coeff": Flag("no-effect", "router load-balancing loss, training only"),
    "--moe-z-loss-coeff": Flag("no-effect", "router z-loss, training only"),
    "--moe-enable-routing-replay": Flag("applied"),
    "--inference-dynamic-batching-max-requests": _count(),
    "--use-legacy-static-engine": Flag("applied"),
    # the static driver's batch size: the legacy engine's context and scheduler, or the dynamic context's
    # max_requests that StaticInferenceEngine(legacy=False) builds
    "--inference-max-requests": _count(),
    # megatron-core pads each expert's decode input to capacity (num_experts / topk: no token dropped): the
    # static engine on every decode step, the dynamic engine only on steps that replay a CUDA graph
    "--moe-pad-experts-for-cuda-graph-inference": Flag("applied"),
    "--flash-decode": Flag(
        "platform", "flash decoding is not wired into the static engine here; megatron-core's own attention runs"
    ),
    "--inference-dynamic-batching-prefix-caching": Flag("applied"),
    "--enable-chunked-prefill": Flag("applied"),
    "--inference-dynamic-batching-max-tokens": _count(),
    "--inference-dynamic-batching-prefix-caching-eviction-policy": _text(),
    "--inference-dynamic-batching-prefix-caching-coordinator-policy": _text(),
    # Megatron-LM's offline driver (examples/inference/offline_inference.py: megatron-core's MegatronLLM)
    "--use-coordinator": Flag("applied"),
    "--async-mode": Flag("applied"),
    "--incoming-requests-per-sec": Flag(
        "no-effect", "shapes Megatron's in-process driver; the ZMQ client submits every request at once"
    ),
    # prompt files and the driver's output (Megatron-LM's examples/inference/utils.py and its drivers)
    "--prompt-file": _text(),
    "--prompt-file-num-truncate": _count(),
    "--termination-id": Flag("applied", value="int", minimum=-1),
    "--output-every-n-results": _count(),
    "--dist-ckpt-optim-fully-reshardable": Flag("no-effect", "optimizer checkpoint layout, training only"),
    "--inference-dynamic-batching-async-sched-mode": _text(),
    # Mamba hybrids (logitsmatch.rank.hybrid_builder)
    "--model-provider": _layout("model_provider", value="text"),
    "--hybrid-layer-pattern": _layout("hybrid_layer_pattern", value="text"),
    "--spec": _text("platform", "Megatron-LM's hybrid_stack_spec is made of Transformer Engine layers; CPU builds "
                                "the same stack from megatron-core's local layers (rank.hybrid_builder)"),
    "--mamba-inference-conv-states-dtype": _text(),
    "--mamba-inference-ssm-states-dtype": _text(),
    "--no-record-throughput": Flag("no-effect", "throughput logging"),
    # checkpoint I/O and training-only
    "--ckpt-fully-parallel-save": Flag("no-effect", "checkpoint saving"),
    "--ckpt-fully-parallel-load": Flag("no-effect", "how checkpoint files are read, not what is read"),
    "--ckpt-assume-constant-structure": Flag("no-effect", "checkpoint I/O caching"),
    "--no-create-attention-mask-in-dataloader": Flag("no-effect", "training data loader"),
    "--num-workers": Flag("no-effect", "training data loader"),
    "--save-interval": Flag("no-effect", "training checkpoints"),
}

# Flags that cannot change inference numerics: a case file may give one twice (Megatron's reader keeps the last).
NO_EFFECT_FLAGS = frozenset(flag for flag, spec in FLAGS.items() if spec.kind == "no-effect")


@dataclass
class FlagReport:
    """What happened to each flag on this run's platform (printed and kept in provenance)."""

    applied: list[str] = field(default_factory=list)
    not_applied: dict[str, str] = field(default_factory=dict)
    no_effect: dict[str, str] = field(default_factory=dict)

    def lines(self, platform: str) -> list[str]:
        out = [f"{flag}: not applied on platform {platform} ({why})" for flag, why in self.not_applied.items()]
        if self.no_effect:
            out.append("accepted, no effect on inference numerics: " + ", ".join(self.no_effect))
        return out

    def to_dict(self) -> dict:
        return {"applied": self.applied, "not_applied": self.not_applied, "no_effect": self.no_effect}


def check_known(model_args: dict, source: str) -> None:
    """Reject any flag the harness would otherwise have to ignore."""
    for flag in model_args:
        if flag not in FLAGS:
            raise BadInput(f"{source}: MODEL_ARGS flag {flag} is not understood by logitsmatch")


def _number(value, kind: str):
    """The value as int/float when it is one (or a numeric string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = int(value) if kind == "int" else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if kind == "int" and isinstance(value, float) and value != number:
        return None
    return number if kind == "int" or math.isfinite(number) else None


def check_values(model_args: dict, source: str) -> None:
    """Each flag's value must be what its Flag says: one BadInput naming the flag, never a TypeError later."""
    for flag, spec in FLAGS.items():
        if flag not in model_args or spec.value is None:
            continue
        value = model_args[flag]
        if spec.value == "text":
            if not isinstance(value, (str, int, float)):
                raise BadInput(f"{source}: MODEL_ARGS {flag} must be a string, got {value!r:.60}")
            continue
        number = _number(value, spec.value)
        if number is None or number < spec.minimum:
            wanted = "an integer" if spec.value == "int" else "a finite number"
            raise BadInput(f"{source}: MODEL_ARGS {flag} must be {wanted} >= {spec.minimum}, got {value!r:.60}")


def classify(model_args: dict, honoured: frozenset[str], platform: str) -> FlagReport:
    """Sort the suite's flags by what the platform does with them."""
    report = FlagReport()
    for flag, value in model_args.items():
        spec = FLAGS[flag]
        if spec.kind == "no-effect":
            report.no_effect[flag] = spec.reason
        elif spec.kind == "platform" and flag not in honoured and value not in (False, None):
            report.not_applied[flag] = spec.reason
        else:
            report.applied.append(flag)
    return report
