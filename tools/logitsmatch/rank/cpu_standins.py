"""CPU stand-ins for the CUDA-only calls on megatron-core's dynamic inference path.

This is the one place where logitsmatch replaces anything of torch or
megatron-core. Each stand-in is installed only when a probe shows the real
thing is unusable in this process, and every installed stand-in is named in
the run's output and provenance, so a CPU golden never hides what ran.
Three touch numerics: the attention kernels (exact pure-torch implementations,
see ``cpu_attention``), running megatron's ``jit_fuser`` functions eagerly
instead of through ``torch.compile``, and the all-reduce that gives gloo's ring
result in two hops (``ring_order_allreduce``, checked bitwise against gloo's
ring for each shape before it serves it). Those for pipeline and
expert parallel runs are installed only for the runs that reach them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
from collections.abc import Callable

import torch
import torch._dynamo
import torch.utils.cpp_extension

from logitsmatch.rank import ring_order_allreduce

# What install_torch_standins() put in place in this process (see torch_standins_installed).
_installed_torch_standins: list[str] = []

# Factories megatron-core calls with pin_memory=True on the inference path.
_PIN_MEMORY_FACTORIES = ("empty", "empty_like", "zeros", "ones", "full", "tensor", "as_tensor", "arange")


class CpuTimingEvent:
    """Host-clock replacement for ``torch.cuda.Event`` (engine step timing only)."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self._recorded_at: float | None = None

    def record(self, stream=None) -> None:
        self._recorded_at = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end_event: CpuTimingEvent) -> float:
        return (end_event._recorded_at - self._recorded_at) * 1000.0


class CpuStream:
    """Stand-in for ``torch.cuda.Stream``: CPU work is synchronous, so every
    cross-stream wait is already satisfied and a stream is only a handle."""

    def __init__(self, device=None, priority: int = 0, **kwargs):
        self.device = torch.device("cpu")

    def wait_event(self, event) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def record_event(self, event=None):
        event = event if event is not None else CpuTimingEvent()
        event.record(self)
        return event

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


def _fails(probe: Callable[[], object]) -> bool:
    try:
        probe()
    except Exception:  # noqa: BLE001 - any failure means the real call is unusable here
        return True
    return False


def _drop_pin_memory(factory):
    @functools.wraps(factory)
    def factory_without_pinning(*args, **kwargs):
        kwargs.pop("pin_memory", None)
        return factory(*args, **kwargs)

    return factory_without_pinning


def _no_op(*args, **kwargs):
    return None


def install_torch_standins() -> list[str]:
    """Replace the CUDA-only torch calls that fail in this process; return their names.

    Must run before megatron-core is imported: some modules bind names such as
    ``torch.cuda.nvtx.range_push`` at import time.
    """
    applied: list[str] = []
    if torch.cuda.is_available():
        return applied

    if _fails(torch.cuda.current_device):
        torch.cuda.current_device = lambda: torch.device("cpu")
        applied.append("torch.cuda.current_device -> cpu")

    if _fails(lambda: torch.empty(1, pin_memory=True)):
        for name in _PIN_MEMORY_FACTORIES:
            setattr(torch, name, _drop_pin_memory(getattr(torch, name)))
        applied.append("pin_memory=True in tensor factories -> ignored")
    if _fails(lambda: torch.empty(1).pin_memory()):
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
        applied.append("Tensor.pin_memory() -> identity")

    if _fails(lambda: torch.cuda.Event(enable_timing=True).record()):
        torch.cuda.Event = CpuTimingEvent
        applied.append("torch.cuda.Event -> host-clock timing event")

    if _fails(torch.cuda.current_stream):
        torch.cuda.Stream = CpuStream
        torch.cuda.current_stream = lambda device=None: CpuStream()
        torch.cuda.stream = lambda stream=None: contextlib.nullcontext()
        applied.append("torch.cuda.Stream/current_stream/stream -> host-synchronous stream handle")

    if _fails(torch.cuda.synchronize):
        torch.cuda.synchronize = _no_op
        applied.append("torch.cuda.synchronize -> no-op")

    if _fails(torch.cuda.memory_stats) or not torch.cuda.memory_stats():
        torch.cuda.memory_stats = lambda *args, **kwargs: collections.defaultdict(int)
        applied.append("torch.cuda.memory_stats -> zeros")

    # megatron's jit_fuser is torch.compile: on CPU every rank would run inductor
    # (a C++ build) for each new token count, which costs seconds per step.
    torch._dynamo.config.disable = True
    applied.append("torch.compile (megatron jit_fuser) -> eager")

    if _fails(lambda: (torch.cuda.nvtx.range_push("probe"), torch.cuda.nvtx.range_pop())):
        torch.cuda.nvtx.range_push = _no_op
        torch.cuda.nvtx.range_pop = _no_op
        applied.append("torch.cuda.nvtx.range_push/range_pop -> no-op")

    # gloo stands in for NCCL on CPU; its ring all-reduce is most of a TP8 decode here.
    applied += ring_order_allreduce.install()

    # megatron-core 0.15 JIT-builds a CUDA managed-memory allocator when it is
    # imported; without CUDA that build can only fail, after a C++ compile per
    # rank (serialised on a lock in ~/.cache/torch_extensions). Fail it at once.
    torch.utils.cpp_extension.load_inline = _no_cuda_builds(torch.utils.cpp_extension.load_inline)
    applied.append("torch.utils.cpp_extension.load_inline(with_cuda=True) -> RuntimeError (no CUDA)")
    _installed_torch_standins[:] = applied
    return applied


def torch_standins_installed() -> bool:
    """Whether this process runs with the torch stand-ins (processes it spawns need them too)."""
    return bool(_installed_torch_standins)


def _no_cuda_builds(load_inline):
    @functools.wraps(load_inline)
    def load_inline_without_cuda(*args, **kwargs):
        if kwargs.get("with_cuda"):
            raise RuntimeError("logitsmatch CPU stand-in: no CUDA extension builds without CUDA")
        return load_inline(*args, **kwargs)

    return load_inline_without_cuda


def install_mamba_standins() -> list[str]:
    """The Mamba mixer's kernels (``cpu_mamba``); before megatron-core's ssm modules are imported."""
    from logitsmatch.rank import cpu_mamba

    return cpu_mamba.install() + cpu_mamba.install_tensor_ops()


def install_megatron_standins(pipeline: int = 1, experts: bool = False, expert_parallel: int = 1,
                              hybrid: bool = False) -> list[str]:
    """Replace the CUDA-only kernels megatron-core picks; call after importing it.

    ``pipeline`` > 1 adds the pipeline logits broadcast's; a model with ``experts`` the MoE
    router's and dispatcher's; ``expert_parallel`` > 1 the idle engine's dummy forward's; a
    ``hybrid`` the Mamba stack's final norm and Triton row copies (after ``install_mamba_standins``).
    """
    from megatron.core.transformer import attention

    from logitsmatch.rank import cpu_attention

    applied = cpu_attention.install(attention) + _use_torch_kv_append() + _fork_the_coordinator()
    if pipeline > 1:
        applied += _allow_host_tensors_in_pipeline_broadcast()
    if experts:
        applied += _moe_te_names_without_te() + _moe_split_sizes_as_numpy()
    if expert_parallel > 1:
        applied += _host_default_causal_mask()
    if hybrid:
        from logitsmatch.rank import cpu_mamba, cpu_mamba_ops

        applied += cpu_mamba.local_final_norm() + cpu_mamba.bind_tensor_ops() + cpu_mamba_ops.bind()
    return applied


class _ForkForSpawn:
    """The ``multiprocessing`` module as dynamic_engine sees it, with 'spawn' contexts served by 'fork'."""

    def get_context(self, method=None):
        import multiprocessing

        return multiprocessing.get_context("fork" if method == "spawn" else method)

    def __getattr__(self, name):
        import multiprocessing

        return getattr(multiprocessing, name)


def _fork_the_coordinator() -> list[str]:
    """Start megatron-core's ZMQ coordinator by fork instead of 'spawn'.

    megatron-core spawns its coordinator because a process that has initialised CUDA cannot
    fork. Without CUDA nothing forbids it, and the spawned interpreter re-imported torch and
    megatron-core (about 3 s of a 12 s tiny run, docs/performance.md). The coordinator only routes
    requests: no tensor it computes reaches a result. It runs the same entrypoint with the same
    arguments (the tokenizer is inherited instead of pickled) and still dies with rank 0.
    """
    if torch.cuda.is_available():
        return []
    from megatron.core.inference.engines import dynamic_engine

    if not hasattr(dynamic_engine, "multiprocessing"):
        return []
    dynamic_engine.multiprocessing = _ForkForSpawn()
    return ["inference.engines.dynamic_engine: the ZMQ coordinator is forked, not spawned (no CUDA to protect)"]


def _allow_host_tensors_in_pipeline_broadcast() -> list[str]:
    """Let the pipeline-parallel logits broadcast take host tensors.

    Every step the controller broadcasts the last stage's logits to the other stages
    (``communication_utils.broadcast_from_last_pipeline_stage``), which asserts ``tensor.is_cuda``
    through ``_is_cuda`` before a plain ``torch.distributed.broadcast`` that gloo carries. Only the
    device check is relaxed: the tensor must still exist. Values move unchanged.
    """
    if torch.cuda.is_available():
        return []
    from megatron.core.inference import communication_utils

    check = getattr(communication_utils, "_is_cuda", None)
    if check is None or not _fails(lambda: check(torch.empty(1))):
        return []

    def _is_present(tensor):
        assert tensor is not None

    communication_utils._is_cuda = _is_present
    return ["inference.communication_utils._is_cuda -> accepts host tensors (pipeline logits broadcast over gloo)"]


def _host_default_causal_mask() -> list[str]:
    """Build megatron's default causal mask on the host.

    ``transformer.utils.get_default_causal_mask`` allocates on ``device="cuda"``. The dynamic path
    never calls it (paged attention masks itself); the expert-parallel ``dummy_forward`` does: an
    engine without a request runs the model without an inference context so that its ranks join
    their expert-parallel peers' all-to-alls, and its output is discarded. No numerics change.
    """
    if torch.cuda.is_available():
        return []
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    if not hasattr(utils, "get_default_causal_mask") or not _fails(lambda: utils.get_default_causal_mask(2)):
        return []

    @functools.lru_cache
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq), diagonal=1).bool()

    utils.get_default_causal_mask = get_default_causal_mask
    if hasattr(fused_softmax, "get_default_causal_mask"):
        fused_softmax.get_default_causal_mask = get_default_causal_mask
    return [
        "transformer.utils.get_default_causal_mask -> host tensor (expert-parallel dummy forward of an idle engine)"
    ]


# Names megatron.core.transformer.moe.moe_utils binds from Transformer Engine inside
# ``try: import transformer_engine``; 0.19 binds them to None when TE is missing.
_MOE_TE_NAMES = (
    "fused_compute_score_for_moe_aux_loss",
    "fused_moe_aux_loss",
    "fused_permute",
    "fused_permute_and_pad_with_probs",
    "fused_permute_with_probs",
    "fused_sort_chunks_by_index",
    "fused_sort_chunks_by_index_with_probs",
    "fused_topk_with_score_function",
    "fused_unpermute",
    "te_general_gemm",
)


def _moe_te_names_without_te() -> list[str]:
    """megatron-core 0.15/0.16 without Transformer Engine: bind moe_utils' TE names to None.

    There ``moe_utils`` binds ``te_general_gemm`` and the fused MoE kernels only when Transformer
    Engine imports and otherwise leaves the names undefined, so the router's
    ``RouterGatingLinearFunction.forward`` (``if te_general_gemm is not None``) raises NameError.
    0.19 binds them to None itself and takes its torch fallback; this does the same, and only for
    names the module lacks.
    """
    from megatron.core.transformer.moe import moe_utils

    missing = [name for name in _MOE_TE_NAMES if not hasattr(moe_utils, name)]
    for name in missing:
        setattr(moe_utils, name, None)
    if not missing:
        return []
    return [f"transformer.moe.moe_utils.{{{', '.join(missing)}}} -> None (Transformer Engine absent: "
            "megatron's torch fallbacks, as 0.19 binds them)"]


def _moe_split_sizes_as_numpy() -> list[str]:
    """The alltoall dispatcher's split sizes as numpy for host tensors too.

    ``moe_utils.maybe_move_tensor_to_cpu(t, as_numpy=True)`` converts only CUDA tensors; a host
    tensor comes back a tensor, which ``torch.distributed.all_to_all_single`` refuses as
    ``input_split_sizes`` / ``output_split_sizes`` (TypeError). On a GPU they always arrive as
    numpy; here too, with the same integers.
    """
    if torch.cuda.is_available():
        return []
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    original = getattr(moe_utils, "maybe_move_tensor_to_cpu", None)
    if original is None or not torch.is_tensor(original(torch.zeros(1, dtype=torch.long), as_numpy=True)):
        return []

    @functools.wraps(original)
    def maybe_move_tensor_to_cpu(tensor, as_numpy: bool = False, record_stream: bool = False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy()
        return original(tensor, as_numpy=as_numpy, record_stream=record_stream)

    moe_utils.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu
    if hasattr(token_dispatcher, "maybe_move_tensor_to_cpu"):
        token_dispatcher.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu
    return ["transformer.moe.moe_utils.maybe_move_tensor_to_cpu(as_numpy=True) -> numpy for host tensors too "
            "(alltoall split sizes)"]


def _use_torch_kv_append() -> list[str]:
    """Route the KV-cache append to megatron's own pure-torch path.

    From 0.16 ``dynamic_context`` imports a triton append kernel and falls back
    to indexed assignment when that name is None. Where triton is installed
    (CUDA wheels) or mocked (0.17+ replace a failed ``import triton`` with a
    MagicMock) the name is set, and the kernel cannot launch without a GPU.
    """
    if torch.cuda.is_available():
        return []
    from megatron.core.inference.contexts import dynamic_context

    if getattr(dynamic_context, "triton_append_key_value_cache", None) is None:
        return []
    dynamic_context.triton_append_key_value_cache = None
    return ["dynamic_context.triton_append_key_value_cache -> megatron's pure-torch KV append"]
