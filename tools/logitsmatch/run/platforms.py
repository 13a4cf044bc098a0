"""Platform profiles: what a run does on CPUs versus GPUs.

A profile decides the device, the collective backend, the dtype, the layer
spec, the attention kernels, and which platform-dependent MODEL_ARGS flags it
honours. Goldens are kept per platform because these choices change numerics.

Profiles:

* ``cpu``      — gloo ranks on host memory, fp32 reference, megatron-core's
  local spec, CPU stand-ins for the CUDA-only calls;
* ``gpu``      — NCCL ranks, one CUDA device per rank, the suite's dtype;
* ``h100``     — the ``gpu`` profile on (fewer than eight) H100s;
* ``dgx_h100`` — the ``gpu`` profile on an 8×H100 node, where Megatron-LM's
  own seed golden (``golden_values_dev_dgx_h100.json``) applies.

What a GPU profile can honour depends on the optional GPU packages of the
toolchain venv (transformer-engine, flash-attn, flashinfer), probed there.
A flag the profile cannot apply with what is installed (or with the model
actually loaded, or at the tensor-parallel size actually run) is reported as
"not applied on platform <name>" with the reason, never dropped silently.

Command-line overrides (``--tensor-parallel-size``, ``--layout``, ``--dtype``) change
numerics, so a run with any override is labelled ``<profile>-<layout>-<dtype>``
(e.g. ``h100-tp1-bf16``, ``cpu-tp2pp2dp2-fp32``; layout names: ``logitsmatch.layouts``):
that label keys its results and goldens, and each overridden flag is reported as
"overridden on the command line".
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch import layouts, schedules
from logitsmatch.errors import BadInput
from logitsmatch.layouts import Layout
from logitsmatch.model_args import switched_on

# The CPU profile keeps each rank's KV cache small: 8 ranks share host memory.
CPU_KV_BUFFER_GB = 0.25

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DTYPE_FLAGS = {"--bf16": "bfloat16", "--fp16": "float16"}

# Optional GPU packages (import name -> distribution name) and the flags each one enables.
GPU_PACKAGES = {
    "transformer_engine": "transformer-engine",
    "flash_attn": "flash-attn",
    "flashinfer": "flashinfer-python",
}
FLAG_NEEDS_PACKAGE = {
    "--transformer-impl": "transformer_engine",
    "--sequence-parallel": "transformer_engine",
    "--inference-fuse-tp-communication": "transformer_engine",
    "--attention-backend": "flash_attn",
    "--use-flashinfer-fused-rope": "flashinfer",
    "--moe-grouped-gemm": "transformer_engine",
}
# Flags no profile applies yet, with the reason.
NOT_WIRED = {
    "--enable-cuda-graph": "logitsmatch does not capture CUDA graphs yet (the engine runs eagerly)",
    "--cuda-graph-impl": "logitsmatch does not capture CUDA graphs yet (the engine runs eagerly)",
    "--inference-dynamic-batching-num-cuda-graphs": "logitsmatch does not capture CUDA graphs yet (no step is padded "
                                                    "to a graph's batch size)",
}
# TE specs: megatron-core's names, in the order of preference the flag asks for.
TE_SPECS = ("transformer_engine", "inference_optimized")


def _requested(model_args: dict, flag: str) -> bool:
    return flag in model_args and model_args[flag] not in (False, None)


# Flags that carry a value (rather than true/false): asked for whenever set.
VALUED_FLAGS = ("--attention-backend", "--transformer-impl", "--cuda-graph-impl",
                "--inference-dynamic-batching-num-cuda-graphs")


def _asks(model_args: dict, flag: str) -> bool:
    return _requested(model_args, flag) if flag in VALUED_FLAGS else switched_on(model_args.get(flag))


@dataclass
class Decision:
    """What a platform does with one suite's flags, for one model and TP size."""

    plan: dict
    dtype: str
    tensor: int
    sequence_parallel: bool
    fuse_tp_communication: bool
    attention_backend: str | None
    use_flashinfer_fused_rope: bool
    moe_grouped_gemm: bool = False
    not_applied: dict[str, str] = field(default_factory=dict)  # flag -> platform-specific reason
    applied: list[str] = field(default_factory=list)  # platform flags applied here


@dataclass(frozen=True)
class Platform:
    """A profile as configured for this machine and command line; ``label(model_args)`` keys goldens."""

    profile: str  # cpu | gpu | h100 | dgx_h100
    device: str  # cpu | cuda
    backend: str
    nominal: frozenset[str]  # flags the profile applies when every GPU package is installed
    installed: frozenset[str] = frozenset()  # import names of the optional GPU packages present
    gpu_count: int | None = None  # None: not probed (a plan for another machine)
    tensor_parallel: int | None = None  # --tensor-parallel-size override
    dtype_override: str | None = None  # --dtype override
    layout_override: Layout | None = None  # --layout override (TP, PP, DP, EP, ETP at once)
    schedule: str = schedules.DEFAULT  # --schedule (logitsmatch.schedules)
    batch_invariant: bool = False  # megatron-core's batch_invariant_mode applied (--batch-invariant, GPU)

    @property
    def overridden(self) -> bool:
        return self.tensor_parallel is not None or self.dtype_override is not None or self.layout_override is not None

    def label(self, model_args: dict, world_size: int = layouts.DEFAULT_WORLD_SIZE) -> str:
        """The name keying results and goldens: the profile, plus ``-<layout>-<dtype>`` when overridden
        (a --layout naming the suite's own layout overrides nothing), with ``sched-<schedule>`` before the dtype
        for any schedule but ``together`` (``cpu-sched-alone-fp32``, ``cpu-tp1-sched-alone-fp32``) and ``bim``
        with batch_invariant_mode applied (``h100-sched-alone-bim-bf16``)."""
        layout_same = not self.overridden or (
            self.tensor_parallel is None and self.dtype_override is None
            and self.layout_override == layouts.of_suite(model_args, world_size, "suite")
        )
        if layout_same and self.schedule == schedules.DEFAULT and not self.batch_invariant:
            return self.profile
        parts = [self.profile] + ([] if layout_same else [self.layout(model_args, world_size).name])
        parts += [] if self.schedule == schedules.DEFAULT else [f"sched-{self.schedule}"]
        parts += ["bim"] if self.batch_invariant else []
        return "-".join(parts + [DTYPE_SHORT[self.dtype(model_args)]])

    @property
    def stand_ins(self) -> bool:
        """CPU stand-ins for torch's CUDA-only calls (and one thread per rank)."""
        return self.device == "cpu"

    @property
    def honours(self) -> frozenset[str]:
        """The platform flags this profile applies with the packages installed here."""
        if self.device == "cpu":
            return self.nominal
        return frozenset(
            flag
            for flag in self.nominal
            if flag not in NOT_WIRED and FLAG_NEEDS_PACKAGE.get(flag, "") in self.installed | {""}
        )

    def configured(self, **changes) -> Platform:
        return dataclasses.replace(self, **changes)

    # --- single decisions -------------------------------------------------------------
    def tensor(self, model_args: dict) -> int:
        if self.layout_override is not None:
            return self.layout_override.tensor
        if self.tensor_parallel is not None:
            return self.tensor_parallel
        return int(model_args.get("--tensor-model-parallel-size", 1))

    def layout(self, model_args: dict, world_size: int = layouts.DEFAULT_WORLD_SIZE) -> Layout:
        """The run's layout: --layout, else the suite's with --tensor-parallel-size replacing TP only."""
        if self.layout_override is not None:
            return self.layout_override
        suite = layouts.of_suite(model_args, world_size, "suite")
        if self.tensor_parallel is None:
            return suite
        return Layout(self.tensor_parallel, suite.pipeline, suite.data, suite.expert, suite.expert_tensor)

    def dtype(self, model_args: dict) -> str:
        if self.dtype_override is not None:
            return self.dtype_override
        for flag, dtype in DTYPE_FLAGS.items():
            if flag in self.nominal and switched_on(model_args.get(flag)):
                return dtype
        return "float32"

    def kv_buffer_gb(self, model_args: dict) -> float:
        requested = float(model_args.get("--inference-dynamic-batching-buffer-size-gb", CPU_KV_BUFFER_GB))
        if "--inference-dynamic-batching-buffer-size-gb" in self.honours:
            return requested
        return min(requested, CPU_KV_BUFFER_GB)

    def _layer_spec(self, model_args: dict, arch: dict) -> tuple[str, str | None]:
        """(spec, reason the flag's request was not met, or None)."""
        if self.device == "cpu":
            return "local", None
        # Megatron-LM's default --transformer-impl is transformer_engine.
        impl = str(model_args.get("--transformer-impl", "transformer_engine"))
        if impl == "local":
            return "local", None
        if impl not in TE_SPECS:
            raise BadInput(f"--transformer-impl {impl!r} is not known (local, transformer_engine, inference_optimized)")
        if "transformer_engine" not in self.installed:
            return "local", "transformer-engine not installed; megatron-core's local spec runs instead"
        if impl == "inference_optimized":
            problems = []
            if arch.get("normalization", "RMSNorm") != "RMSNorm":
                problems.append(f"the model has {arch.get('normalization')}")
            if arch.get("add_bias_linear") or arch.get("add_qkv_bias"):
                problems.append("the model has linear biases")
            if problems:
                return "transformer_engine", (
                    "inference_optimized needs RMSNorm and no linear biases ("
                    + ", ".join(problems)
                    + "); the Transformer Engine spec (transformer_engine) runs instead"
                )
        return impl, None

    def _override_notes(self, model_args: dict, tensor: int, dtype: str) -> tuple[dict[str, str], list[str]]:
        """Suite flags replaced by --tensor-parallel-size / --dtype: (not applied with why, applied)."""
        not_applied: dict[str, str] = {}
        applied: list[str] = []
        suite_tp = int(model_args.get("--tensor-model-parallel-size", 1))
        if self.tensor_parallel is not None and self.tensor_parallel != suite_tp:
            not_applied["--tensor-model-parallel-size"] = (
                f"overridden on the command line: --tensor-parallel-size {tensor} (suite: {suite_tp})"
            )
        if self.layout_override is not None:
            run = self.layout_override
            for flag, size in (
                ("--tensor-model-parallel-size", run.tensor),
                ("--pipeline-model-parallel-size", run.pipeline),
                ("--expert-model-parallel-size", run.expert),
                ("--expert-tensor-parallel-size", run.etp),
            ):
                if flag in model_args and int(model_args[flag]) != size:
                    not_applied[flag] = f"overridden on the command line: --layout {run.name} ({flag} {size})"
        if self.dtype_override is not None:
            for flag, flag_dtype in DTYPE_FLAGS.items():
                if switched_on(model_args.get(flag)):
                    if flag_dtype == dtype:
                        applied.append(flag)
                    else:
                        not_applied[flag] = f"overridden on the command line: --dtype {dtype}"
        return not_applied, applied

    def _feature_blockers(self, spec: str, tensor: int) -> dict[str, str | None]:
        """For each optional GPU feature flag: why it cannot run here (None: it can)."""
        te = "transformer_engine" in self.installed
        return {
            "--sequence-parallel": (
                "needs the Transformer Engine spec ("
                + ("transformer-engine not installed)" if not te else "local spec chosen)")
                if spec == "local"
                else ("needs tensor parallel > 1 (this run is TP1)" if tensor == 1 else None)
            ),
            "--inference-fuse-tp-communication": (
                "needs --transformer-impl inference_optimized with Transformer Engine "
                + ("(transformer-engine not installed)" if not te else f"(spec is {spec})")
                if spec != "inference_optimized"
                else ("needs tensor parallel > 1 (this run is TP1)" if tensor == 1 else None)
            ),
            "--attention-backend": None if "flash_attn" in self.installed else (
                "flash-attn not installed; megatron-core's flash path runs logitsmatch's pure-torch attention stand-in"
            ),
            "--use-flashinfer-fused-rope": None if "flashinfer" in self.installed else (
                "flashinfer not installed; megatron-core's own RoPE runs"
            ),
            "--moe-grouped-gemm": None if spec != "local" else (
                "needs the Transformer Engine spec (TEGroupedMLP); the local spec runs SequentialMLP, the same "
                "per-expert GEMMs one expert at a time"
            ),
            **NOT_WIRED,
        }

    # --- everything at once -------------------------------------------------------------
    def decide(self, model_args: dict, arch: dict, layout: Layout | None = None) -> Decision:
        """Every platform decision for this suite, model and layout (default: the suite's), with the reasons."""
        layout = self.layout(model_args) if layout is None else layout
        tensor = layout.tensor
        if tensor < 1:
            raise BadInput(f"tensor parallel size must be at least 1, got {tensor}")
        dtype = self.dtype(model_args)
        not_applied, applied = self._override_notes(model_args, tensor, dtype)
        plan = {"name": self.label(model_args), "profile": self.profile, "device": self.device, "torch_threads": 1}

        if self.device == "cpu":
            plan.update(backend=self.backend, stand_ins=True, layer_spec="local",
                        attention="pure-torch stand-in (logitsmatch.rank.cpu_attention)", installed=[])
            return Decision(plan, dtype, tensor, False, False, None, False, False, not_applied, applied)

        world = layout.world_size
        if self.gpu_count is not None and world > self.gpu_count:
            raise BadInput(
                f"platform {self.profile}: {world} ranks need {world} GPUs (one per rank; NCCL refuses two ranks "
                f"on one GPU) but this machine has {self.gpu_count}: run on a node with {world} GPUs, or pass "
                f"--tensor-parallel-size {self.gpu_count} (an override, recorded in the result's label)"
            )
        backend = str(model_args.get("--distributed-backend", self.backend))
        if backend not in ("nccl", "gloo"):
            raise BadInput(f"--distributed-backend {backend!r} is not supported (nccl or gloo)")

        spec, why = self._layer_spec(model_args, arch)
        if why and _requested(model_args, "--transformer-impl"):
            not_applied["--transformer-impl"] = why
        enabled = {}
        for flag, blocker in self._feature_blockers(spec, tensor).items():
            enabled[flag] = _asks(model_args, flag) and blocker is None
            if _asks(model_args, flag) and blocker is not None:
                not_applied[flag] = blocker
        for flag in self.honours:
            if _requested(model_args, flag) and flag not in not_applied:
                applied.append(flag)

        plan.update(
            backend=backend,
            # the worker installs stand-ins only where a probe shows the real thing missing
            stand_ins="flash_attn" not in self.installed,
            layer_spec=spec,
            attention="flash-attn" if "flash_attn" in self.installed
            else "pure-torch stand-in (logitsmatch.rank.cpu_attention on CUDA tensors)",
            installed=sorted(self.installed),
        )
        attention_backend = str(model_args["--attention-backend"]) if enabled["--attention-backend"] else None
        return Decision(
            plan, dtype, tensor,
            sequence_parallel=enabled["--sequence-parallel"],
            fuse_tp_communication=enabled["--inference-fuse-tp-communication"],
            attention_backend=attention_backend,
            use_flashinfer_fused_rope=enabled["--use-flashinfer-fused-rope"],
            moe_grouped_gemm=enabled["--moe-grouped-gemm"],
            not_applied=not_applied,
            applied=applied,
        )


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
        "--cuda-graph-impl",
        "--inference-dynamic-batching-num-cuda-graphs",
        "--inference-dynamic-batching-buffer-size-gb",
        "--moe-grouped-gemm",
    }
)
_ALL_GPU_PACKAGES = frozenset(GPU_PACKAGES)

# Nominal profiles: a GPU profile as if its toolchain had every optional GPU
# package. get_platform() probes what this venv really has.
PLATFORMS = {
    "cpu": Platform("cpu", "cpu", backend="gloo", nominal=frozenset()),
    "gpu": Platform("gpu", "cuda", backend="nccl", nominal=_GPU_FLAGS, installed=_ALL_GPU_PACKAGES),
    "h100": Platform("h100", "cuda", backend="nccl", nominal=_GPU_FLAGS, installed=_ALL_GPU_PACKAGES),
    "dgx_h100": Platform("dgx_h100", "cuda", backend="nccl", nominal=_GPU_FLAGS, installed=_ALL_GPU_PACKAGES),
}
DGX_GPUS = 8


def _importable(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install (missing CUDA libs, ABI mismatch) is not usable
        return False
    return True


def installed_gpu_packages() -> frozenset[str]:
    """The optional GPU packages importable in this venv (import names)."""
    return frozenset(module for module in GPU_PACKAGES if _importable(module))


def cuda_devices() -> list[str]:
    """The CUDA devices torch sees; without NVIDIA's driver (no /dev/nvidiactl) none, and torch is not imported."""
    if not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists():
        return []
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def detect_platform_name(devices: list[str] | None = None) -> str:
    """``cpu`` without CUDA; ``dgx_h100`` with eight or more H100s, ``h100`` with fewer; else ``gpu``."""
    devices = cuda_devices() if devices is None else devices
    if not devices:
        return "cpu"
    if all("H100" in name for name in devices):
        return "dgx_h100" if len(devices) >= DGX_GPUS else "h100"
    return "gpu"


def _is_layout(text: str) -> bool:
    try:
        layouts.parse(text)
    except BadInput:
        return False
    return True


def check_label(label: str) -> str:
    """A platform label as results and goldens are keyed (``Platform.label``): a profile, or
    ``<profile>-<layout>-<dtype>``; BadInput for anything else, before a path is built from it."""
    profile, _, rest = label.partition("-")
    layout, _, dtype = rest.rpartition("-")
    if profile in PLATFORMS and (label == profile or (dtype in DTYPE_SHORT.values() and _is_layout(layout))):
        return label
    shown = label.encode("unicode_escape").decode("ascii")[:80]
    raise BadInput(f"unknown platform {shown!r} (known: {', '.join(PLATFORMS)}, or <platform>-<layout>-<dtype> "
                   f"such as cpu-tp1-fp32)")


def get_platform(
    name: str | None,
    *,
    tensor_parallel: int | None = None,
    dtype: str | None = None,
    layout: Layout | None = None,
    schedule: str = schedules.DEFAULT,
    installed: frozenset[str] | None = None,
    gpu_count: int | None = None,
    probe: bool = True,
) -> Platform:
    """The named (or detected) profile, with this venv's GPU packages and device count.

    ``installed`` and ``gpu_count`` replace the probes (tests, planning for another machine).
    """
    devices = (
        cuda_devices() if probe and (name is None or (name in PLATFORMS and PLATFORMS[name].device == "cuda")) else None
    )
    name = name or detect_platform_name(devices or [])
    if name not in PLATFORMS:
        raise BadInput(f"unknown platform {name!r} (known: {', '.join(PLATFORMS)})")
    if dtype is not None:
        dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
        if dtype not in DTYPES:
            raise BadInput(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if tensor_parallel is not None and tensor_parallel < 1:
        raise BadInput(f"--tensor-parallel-size must be at least 1, got {tensor_parallel}")
    if tensor_parallel is not None and layout is not None:
        raise BadInput("--tensor-parallel-size and --layout both set the tensor-parallel size: give one")
    platform = PLATFORMS[name].configured(tensor_parallel=tensor_parallel, dtype_override=dtype, layout_override=layout,
                                          schedule=schedules.check(schedule))
    if platform.device == "cpu":
        return platform
    if gpu_count is None and probe:
        gpu_count = len(devices or [])
        if gpu_count == 0:
            raise BadInput(f"platform {name} needs CUDA GPUs, and torch sees none here (use --platform cpu)")
    if installed is None:
        installed = installed_gpu_packages() if probe else platform.installed
    return platform.configured(installed=frozenset(installed), gpu_count=gpu_count)


def add_platform_option(parser, what: str) -> None:
    """The one ``--platform`` every subcommand takes: a profile name, detected when not given."""
    parser.add_argument("--platform", default=None, metavar="{" + ",".join(PLATFORMS) + "}",
                        help=f"platform {what} (default: detected)")


def listed_gpus() -> list[str]:
    """The GPU names ``nvidia-smi -L`` lists: the harness's torch-free view of this machine's devices."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if listed.returncode != 0:
        return []
    return [line.split(": ", 1)[1].split(" (UUID")[0] for line in listed.stdout.splitlines() if line.startswith("GPU ")]


def harness_platform(name: str | None) -> str:
    """``--platform`` of a harness command (record, matrix, compare-toolchains): a label as given (``check_label``:
    a profile or ``<profile>-<layout>-<dtype>``, never a path), or detected from nvidia-smi as ``run`` detects it
    from torch."""
    return check_label(name) if name is not None else detect_platform_name(listed_gpus())
