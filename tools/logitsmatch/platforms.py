"""Platform profiles: what a run does on CPUs versus GPUs.

A profile decides the collective backend, the dtype, the layer spec, whether
CPU stand-ins are installed, and which platform-dependent MODEL_ARGS flags it
honours. Goldens are kept per platform because these choices change numerics.
"""

from __future__ import annotations

from dataclasses import dataclass

from logitsmatch.errors import BadInput

# The CPU profile keeps each rank's KV cache small: 8 ranks share host memory.
CPU_KV_BUFFER_GB = 0.25


@dataclass(frozen=True)
class Platform:
    name: str
    backend: str
    stand_ins: bool
    honours: frozenset[str]

    def dtype(self, model_args: dict) -> str:
        if "--bf16" in self.honours and model_args.get("--bf16"):
            return "bfloat16"
        if "--fp16" in self.honours and model_args.get("--fp16"):
            return "float16"
        return "float32"

    def layer_spec(self, model_args: dict) -> str:
        impl = model_args.get("--transformer-impl", "local")
        if impl in ("transformer_engine", "inference_optimized") and "--transformer-impl" in self.honours:
            return "transformer_engine"
        return "local"

    def kv_buffer_gb(self, model_args: dict) -> float:
        requested = float(model_args.get("--inference-dynamic-batching-buffer-size-gb", CPU_KV_BUFFER_GB))
        if "--inference-dynamic-batching-buffer-size-gb" in self.honours:
            return requested
        return min(requested, CPU_KV_BUFFER_GB)

    def to_plan(self, model_args: dict) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "stand_ins": self.stand_ins,
            "layer_spec": self.layer_spec(model_args),
            "torch_threads": 1,
        }


_GPU_FLAGS = frozenset(
    {
        "--bf16",
        "--fp16",
        "--distributed-backend",
        "--transformer-impl",
        "--sequence-parallel",
        "--attention-backend",
        "--inference-fuse-tp-communication",
        "--use-flashinfer-fused-rope",
        "--enable-cuda-graph",
        "--inference-dynamic-batching-buffer-size-gb",
    }
)

PLATFORMS = {
    "cpu": Platform("cpu", backend="gloo", stand_ins=True, honours=frozenset()),
    "gpu": Platform("gpu", backend="nccl", stand_ins=False, honours=_GPU_FLAGS),
    "dgx_h100": Platform("dgx_h100", backend="nccl", stand_ins=False, honours=_GPU_FLAGS),
}


def detect_platform_name() -> str:
    """``gpu`` when this process sees a CUDA device, else ``cpu``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_platform(name: str | None) -> Platform:
    name = name or detect_platform_name()
    if name not in PLATFORMS:
        raise BadInput(f"unknown platform {name!r} (known: {', '.join(PLATFORMS)})")
    return PLATFORMS[name]
