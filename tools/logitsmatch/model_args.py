"""Every MODEL_ARGS flag logitsmatch understands, and what each platform does with it.

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

from dataclasses import dataclass, field

from logitsmatch.errors import BadInput


@dataclass(frozen=True)
class Flag:
    kind: str  # "applied" | "platform" | "no-effect"
    reason: str = ""


FLAGS: dict[str, Flag] = {
    # model shape (checked against the architecture actually loaded)
    "--num-layers": Flag("applied"),
    "--hidden-size": Flag("applied"),
    "--num-attention-heads": Flag("applied"),
    "--max-position-embeddings": Flag("applied"),
    "--use-mcore-models": Flag("applied"),
    # parallelism and numerics
    "--tensor-model-parallel-size": Flag("applied"),
    "--pipeline-model-parallel-size": Flag("applied"),
    "--deterministic-mode": Flag("applied"),
    "--bf16": Flag("platform", "CPU goldens are an fp32 reference; bf16 on CPU is not GPU bf16"),
    "--fp16": Flag("platform", "CPU goldens are an fp32 reference"),
    "--distributed-backend": Flag("platform", "NCCL needs GPUs; CPU ranks talk over gloo"),
    "--transformer-impl": Flag("platform", "Transformer Engine layers need CUDA; CPU uses the local spec"),
    "--sequence-parallel": Flag("platform", "sequence parallel needs the Transformer Engine spec"),
    "--attention-backend": Flag("platform", "flash attention needs CUDA; CPU runs exact pure-torch paged attention"),
    "--inference-fuse-tp-communication": Flag("platform", "fused TP communication needs CUDA symmetric memory"),
    "--use-flashinfer-fused-rope": Flag("platform", "flashinfer needs CUDA"),
    "--enable-cuda-graph": Flag("platform", "CUDA graphs need CUDA"),
    # inference and sampling
    "--prompts": Flag("applied"),
    "--temperature": Flag("applied"),
    "--top_k": Flag("applied"),
    "--top_p": Flag("applied"),
    "--return-log-probs": Flag("applied"),
    "--num-tokens-to-generate": Flag("applied"),
    "--inference-max-seq-length": Flag("applied"),
    "--inference-dynamic-batching-buffer-size-gb": Flag(
        "platform", "KV-cache capacity only; the CPU profile caps it to fit 8 ranks in host memory"
    ),
    "--incoming-requests-per-step": Flag(
        "no-effect", "shapes Megatron's in-process driver; the ZMQ client submits every request at once"
    ),
    "--inference-logging-step-interval": Flag("no-effect", "engine logging only"),
    "--inference-repeat-n": Flag("no-effect", "repeats the run for throughput; the determinism check reruns instead"),
    "--max-tokens-to-oom": Flag("no-effect", "static-batching guard; the dynamic engine sizes by its buffer"),
    # checkpoint and tokenizer
    "--load": Flag("applied"),
    "--tokenizer-model": Flag("applied"),
    "--tokenizer-type": Flag("applied"),
    "--tiktoken-pattern": Flag("applied"),
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
    "--ffn-hidden-size": Flag("applied"),
    "--kv-channels": Flag("applied"),
    "--normalization": Flag("applied"),
    "--swiglu": Flag("applied"),
    "--untie-embeddings-and-output-weights": Flag("applied"),
    "--disable-bias-linear": Flag("applied"),
    "--position-embedding-type": Flag("applied"),
    "--rotary-base": Flag("applied"),
    "--rotary-percent": Flag("applied"),
    "--init-method-std": Flag("no-effect", "initialisation only; the weights come from the checkpoint"),
    "--attention-dropout": Flag("no-effect", "dropout is off at inference"),
    "--hidden-dropout": Flag("no-effect", "dropout is off at inference"),
    # mixture of experts
    "--expert-model-parallel-size": Flag("applied"),
    "--expert-tensor-parallel-size": Flag("applied"),
    "--num-experts": Flag("applied"),
    "--moe-router-topk": Flag("applied"),
    "--moe-ffn-hidden-size": Flag("applied"),
    "--moe-shared-expert-intermediate-size": Flag("applied"),
    "--moe-router-score-function": Flag("applied"),
    "--moe-router-load-balancing-type": Flag("applied"),
    "--moe-token-dispatcher-type": Flag("applied"),
    "--moe-grouped-gemm": Flag(
        "platform", "grouped GEMM needs CUDA; CPU runs SequentialMLP, the same per-expert GEMMs one expert at a time"
    ),
    "--moe-aux-loss-coeff": Flag("no-effect", "router load-balancing loss, training only"),
    "--moe-z-loss-coeff": Flag("no-effect", "router z-loss, training only"),
    "--moe-enable-routing-replay": Flag("applied"),
    "--inference-dynamic-batching-max-requests": Flag("applied"),
    "--incoming-requests-per-sec": Flag(
        "no-effect", "shapes Megatron's in-process driver; the ZMQ client submits every request at once"
    ),
    # checkpoint I/O and training-only
    "--ckpt-fully-parallel-save": Flag("no-effect", "checkpoint saving"),
    "--ckpt-fully-parallel-load": Flag("no-effect", "how checkpoint files are read, not what is read"),
    "--ckpt-assume-constant-structure": Flag("no-effect", "checkpoint I/O caching"),
    "--no-create-attention-mask-in-dataloader": Flag("no-effect", "training data loader"),
    "--num-workers": Flag("no-effect", "training data loader"),
    "--save-interval": Flag("no-effect", "training checkpoints"),
}


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
