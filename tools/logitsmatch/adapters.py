"""megatron-core API drift, in one place.

Each adapter class speaks one span of megatron-core releases; the worker only
calls adapter methods. Supported: 0.15.x, 0.16.x and 0.17+ (0.17 → 0.19 only
add InferenceConfig fields). Releases before 0.15 have no DP coordinator.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket as _socket

from logitsmatch.errors import BadInput


def installed_megatron_version() -> tuple[int, int, int]:
    text = importlib.metadata.version("megatron-core")
    parts = [int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


class _LoopbackSocketModule:
    """A ``socket`` module whose gethostname() names the bind host we chose.

    megatron-core 0.15/0.16 bind the engine PUB sockets (and 0.16 the
    coordinator ROUTER) to ``socket.gethostname()``; handing those modules this
    proxy makes them bind where the user asked (127.0.0.1 by default).
    """

    def __init__(self, bind_host: str):
        self._bind_host = bind_host

    def gethostname(self) -> str:
        return self._bind_host

    def __getattr__(self, name):
        return getattr(_socket, name)


def coordinator_entrypoint_on_host(bind_host, original_entrypoint, *args, **kwargs):
    """Runs in the spawned coordinator process: bind there too, then start it."""
    from megatron.core.inference import data_parallel_inference_coordinator as coordinator_module

    coordinator_module.socket = _LoopbackSocketModule(bind_host)
    return original_entrypoint(*args, **kwargs)


class _CoordinatorEntrypoint:
    """Picklable stand-in for ``DataParallelInferenceCoordinator.entrypoint``."""

    def __init__(self, bind_host: str, original):
        self.bind_host = bind_host
        self.original = original

    def __call__(self, *args, **kwargs):
        return coordinator_entrypoint_on_host(self.bind_host, self.original, *args, **kwargs)


class Mcore016:
    """megatron-core 0.16.x."""

    name = "0.16"

    # --- distributed -------------------------------------------------------------
    def init_distributed(self, plan: dict) -> None:
        import torch
        from megatron.core import parallel_state

        torch.distributed.init_process_group(backend=plan["platform"]["backend"])
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=plan["parallel"]["tensor"],
            pipeline_model_parallel_size=plan["parallel"]["pipeline"],
        )

    def destroy_distributed(self) -> None:
        import torch
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()

    # --- sockets -----------------------------------------------------------------
    def install_network_binding(self, bind_host: str) -> list[str]:
        from megatron.core.inference import data_parallel_inference_coordinator as coordinator_module
        from megatron.core.inference.engines import dynamic_engine

        dynamic_engine.socket = _LoopbackSocketModule(bind_host)
        coordinator_class = coordinator_module.DataParallelInferenceCoordinator
        coordinator_class.entrypoint = _CoordinatorEntrypoint(bind_host, coordinator_class.entrypoint)
        return [f"engine and coordinator sockets bound to {bind_host} (socket.gethostname override)"]

    # --- tokenizer ---------------------------------------------------------------
    def build_tokenizer(self, spec: dict):
        from megatron.core.tokenizers import MegatronTokenizer

        return MegatronTokenizer.from_pretrained(
            tokenizer_path=spec["path"],
            metadata_path={"library": "tiktoken"},
            pattern=spec["pattern"],
            vocab_size=spec["vocab_size"],
            num_special_tokens=spec["num_special_tokens"],
        )

    # --- engine ------------------------------------------------------------------
    def build_context(self, model, plan: dict):
        from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

        arch, inference = plan["architecture"], plan["inference"]
        return DynamicInferenceContext(
            params_dtype=model.config.params_dtype,
            num_layers=arch["num_layers"] // plan["parallel"]["pipeline"],
            kv_channels=arch["kv_channels"],
            num_attention_heads=arch["num_query_groups"],
            max_sequence_length=inference["max_sequence_length"],
            buffer_size_gb=inference["buffer_size_gb"],
            max_tokens=inference["max_tokens"],
            block_size_tokens=inference["block_size_tokens"],
            tensor_model_parallel_size=plan["parallel"]["tensor"],
            materialize_only_last_token_logits=not plan["sampling"]["return_log_probs"],
            use_flashinfer_fused_rope=inference["use_flashinfer_fused_rope"],
            unified_memory_level=0,
        )

    def build_wrapper(self, model, context, plan: dict):
        from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
            GPTInferenceWrapper,
        )
        from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
            InferenceWrapperConfig,
        )
        from logitsmatch.model_builder import padded_vocab_size

        config = InferenceWrapperConfig(
            hidden_size=plan["architecture"]["hidden_size"],
            params_dtype=model.config.params_dtype,
            inference_batch_times_seqlen_threshold=-1,
            padded_vocab_size=padded_vocab_size(plan["vocab_size"], plan["parallel"]["tensor"]),
            inference_max_requests=plan["inference"]["max_requests"],
            inference_max_seq_length=plan["inference"]["max_sequence_length"],
        )
        return GPTInferenceWrapper(model, config, context)

    def build_engine(self, model, tokenizer, plan: dict):
        from megatron.core.inference.engines import DynamicInferenceEngine
        from megatron.core.inference.text_generation_controllers.text_generation_controller import (
            TextGenerationController,
        )

        context = self.build_context(model, plan)
        wrapper = self.build_wrapper(model, context, plan)
        controller = TextGenerationController(inference_wrapped_model=wrapper, tokenizer=tokenizer)
        return DynamicInferenceEngine(
            controller,
            context,
            enable_cuda_graph=False,
            random_seed=plan["seed"],
            enable_chunked_prefill=plan["inference"]["enable_chunked_prefill"],
        )

    def sampling_params(self, sampling: dict, engine):
        from megatron.core.inference.sampling_params import SamplingParams

        return SamplingParams(
            temperature=sampling["temperature"],
            top_k=sampling["top_k"],
            top_p=sampling["top_p"],
            return_log_probs=sampling["return_log_probs"],
            num_tokens_to_generate=sampling["num_tokens_to_generate"],
            termination_id=engine.controller.tokenizer.eod,
        )

    # --- coordinator and client --------------------------------------------------
    async def start_listening(self, engine, sampling_params, network: dict) -> str:
        return await engine.start_listening_to_data_parallel_coordinator(
            inference_coordinator_port=network["coordinator_port"],
            launch_inference_coordinator=True,
        )

    async def start_client(self, address: str):
        from megatron.core.inference.inference_client import InferenceClient

        client = InferenceClient(address)
        await client.start()
        return client

    def finished_request(self, result):
        return result.merge() if hasattr(result, "merge") else result

    async def shutdown(self, client) -> None:
        await client.stop_engines()
        client.stop()

    async def wait_for_engine_stop(self, engine) -> None:
        await engine.engine_loop_task


def for_installed_megatron():
    """The adapter for the megatron-core release in this venv."""
    version = installed_megatron_version()
    if version[:2] == (0, 16):
        return Mcore016()
    raise BadInput(
        f"megatron-core {'.'.join(map(str, version))} is not supported "
        "(logitsmatch supports 0.15.x, 0.16.x and 0.17 to 0.19)"
    )
