"""megatron-core API drift, in one place.

Each adapter class speaks one span of megatron-core releases; the worker only
calls adapter methods. ``rank.adapter_base.Adapter`` holds what every supported
release shares; a subclass overrides only what its releases changed. Supported: 0.15.x
(``Mcore015``), 0.16.x (``Mcore016``) and 0.17 to 0.19 (``Mcore017``: 0.17 ->
0.19 only add InferenceConfig fields; main's 0.20 development trees too, for the
watch). Releases before 0.15 have no DP coordinator.
Which release this process imports, and whether one of these speaks it, is
``rank.megatron_release``'s; ``for_installed_megatron`` picks the adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from logitsmatch.rank.adapter_base import Adapter
from logitsmatch.rank.coordinator_binding import (
    AddressRewritingZmq,
    LoopbackSocketModule,
    bind_coordinator_by_address,
    bind_coordinator_by_hostname,
    wrap_coordinator_entrypoint,
)
from logitsmatch.rank.megatron_release import check_supported, installed_megatron_version

_IPC_PATH_MAX = 107  # sockaddr_un.sun_path on Linux, less its terminating NUL


class Mcore016(Adapter):
    """megatron-core 0.16.x: flat context kwargs, InferenceWrapperConfig, async client."""

    name = "0.16"

    def install_network_binding(self, bind_host: str) -> list[str]:
        from megatron.core.inference.engines import dynamic_engine

        dynamic_engine.socket = LoopbackSocketModule(bind_host)
        wrap_coordinator_entrypoint(bind_coordinator_by_hostname, bind_host)
        applied = [f"engine and coordinator sockets bound to {bind_host} (socket.gethostname override)"]
        try:  # 0.16: the expert-parallel work-consensus sockets bind to gethostname() too
            from megatron.core.inference.engines import async_zmq_communicator
        except ImportError:
            return applied
        async_zmq_communicator.socket = LoopbackSocketModule(bind_host)
        return applied + [f"expert-parallel ZMQ communicator bound to {bind_host} (socket.gethostname override)"]

    def context_kwargs(self, model, plan: dict) -> dict:
        arch, inference = plan["architecture"], plan["inference"]
        from_plan = (
            "max_sequence_length",
            "buffer_size_gb",
            "max_tokens",
            "block_size_tokens",
            "use_flashinfer_fused_rope",
        )
        return dict(
            params_dtype=model.config.params_dtype,
            num_layers=arch["num_layers"] // plan["parallel"]["pipeline"],
            kv_channels=arch["kv_channels"],
            num_attention_heads=arch["num_query_groups"],
            tensor_model_parallel_size=plan["parallel"]["tensor"],
            materialize_only_last_token_logits=not plan["sampling"]["return_log_probs"],
            unified_memory_level=0,
            max_requests=inference.get("context_max_requests"),
            **{name: inference[name] for name in from_plan},
        )

    def build_context(self, model, plan: dict):
        from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

        from logitsmatch.rank.models import mamba_inference_state

        kwargs = {**self.context_kwargs(model, plan), **mamba_inference_state(model, plan)}
        return DynamicInferenceContext(**self.record("context", kwargs))

    def build_wrapper(self, model, context, plan: dict):
        from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
            GPTInferenceWrapper,
        )
        from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
            InferenceWrapperConfig,
        )

        from logitsmatch.rank.model_builder import padded_vocab_size

        pad_experts = bool(plan["moe"] and plan["moe"]["pad_experts_for_cuda_graph_inference"])
        config = InferenceWrapperConfig(
            hidden_size=plan["architecture"]["hidden_size"],
            params_dtype=model.config.params_dtype,
            inference_batch_times_seqlen_threshold=-1,
            padded_vocab_size=padded_vocab_size(plan["vocab_size"], plan["parallel"]["tensor"]),
            inference_max_requests=plan["inference"]["max_requests"],
            inference_max_seq_length=plan["inference"]["max_sequence_length"],
            # 0.15/0.16 read MoE decode padding here (0.17+: TransformerConfig, rank.model_builder)
            moe_pad_experts_for_cuda_graph_inference=pad_experts,
        )
        self.configs["inference_wrapper_config"] = config
        return GPTInferenceWrapper(model, config, context)

    def make_engine(self, controller, context, plan: dict):
        from megatron.core.inference.engines import DynamicInferenceEngine

        return DynamicInferenceEngine(
            controller, context, **self.record("engine", self.engine_kwargs(controller, plan))
        )

    def engine_kwargs(self, controller, plan: dict) -> dict:
        return dict(
            enable_cuda_graph=False,
            random_seed=plan["seed"],
            enable_chunked_prefill=plan["inference"]["enable_chunked_prefill"],
        )

    async def start_listening(self, engine, sampling_params, network: dict) -> str:
        return await engine.start_listening_to_data_parallel_coordinator(
            inference_coordinator_port=network["coordinator_port"],
            launch_inference_coordinator=True,
        )

    async def start_client(self, address: str):
        from megatron.core.inference.inference_client import InferenceClient

        client = InferenceClient(self.client_target(address))
        await client.start()
        return client

    def client_target(self, address: str):
        return address

    async def shutdown(self, client) -> None:
        await client.stop_engines()
        client.stop()


class Mcore015(Mcore016):
    """megatron-core 0.15.x, the first release with the DP coordinator.

    Differs from 0.16: context sizing kwargs, engine-level termination id and
    seed, a coordinator port the caller must choose, hard-coded bind addresses,
    and a non-awaitable STOP. The client and the engines connect to the
    coordinator at ``$MASTER_ADDR`` (the launcher's 127.0.0.1), whatever it binds.
    """

    name = "0.15"
    # Megatron-LM's default for --inference-dynamic-batching-buffer-guaranteed-fraction
    # in the 0.15 era; 0.16 dropped the guaranteed share.
    BUFFER_GUARANTEED_FRACTION = 0.2

    def install_network_binding(self, bind_host: str) -> list[str]:
        from megatron.core.inference.engines import dynamic_engine

        self.ipc_dir = self.ipc_directory()
        self.ipc_dir.mkdir(exist_ok=True)
        dynamic_engine.zmq = AddressRewritingZmq({"ipc:///tmp/": f"ipc://{self.ipc_dir}/"})
        wrap_coordinator_entrypoint(bind_coordinator_by_address, bind_host)
        return [
            f"coordinator bound to {bind_host} instead of 0.0.0.0 (zmq address rewrite)",
            "engine broadcast ipc sockets moved from /tmp to a per-run temp directory (zmq address rewrite)",
        ]

    @staticmethod
    def ipc_directory() -> Path:
        """A directory for the broadcast sockets that no concurrent run shares.

        The rendezvous port (MASTER_PORT) is held by this run while it lives and
        every rank sees the same one. An ipc:// path must fit in sun_path (108
        bytes); a long $TMPDIR falls back to /tmp, where megatron puts them itself.
        """
        name = f"logitsmatch-zmq-{os.environ['MASTER_PORT']}"
        directory = Path(tempfile.gettempdir()) / name
        if len(f"{directory}/tp-coord-0000-tp-bcast-socket-req".encode()) > _IPC_PATH_MAX:
            directory = Path("/tmp") / name
        return directory

    def context_kwargs(self, model, plan: dict) -> dict:
        kwargs = super().context_kwargs(model, plan)
        kwargs["max_tokens_override"] = kwargs.pop("max_tokens")
        kwargs["max_requests_override"] = kwargs.pop("max_requests")
        kwargs.update(buffer_guaranteed_fraction=self.BUFFER_GUARANTEED_FRACTION)
        return kwargs

    def engine_kwargs(self, controller, plan: dict) -> dict:
        # 0.15 SamplingParams has no termination_id; the engine holds it.
        return {**super().engine_kwargs(controller, plan),
                "termination_id": plan["sampling"].get("termination_id", controller.tokenizer.eod)}

    def termination_kwargs(self, engine, sampling: dict) -> dict:
        return {}

    async def start_listening(self, engine, sampling_params, network: dict) -> str:
        import torch

        # Every DP group's first rank connects to the port, so all ranks must agree on it.
        port = [network["coordinator_port"]]
        if port[0] is None and torch.distributed.get_rank() == 0:
            from logitsmatch.run.ports import free_loopback_port

            port = [free_loopback_port()]
        torch.distributed.broadcast_object_list(port, src=0)
        await engine.start_listening_to_data_parallel_coordinator(
            sampling_params, inference_coordinator_port=port[0], launch_inference_coordinator=True
        )
        return f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{port[0]}"

    def client_target(self, address: str) -> int:
        return int(address.rsplit(":", 1)[1])  # the 0.15 client takes a port, host is $MASTER_ADDR

    async def shutdown(self, client) -> None:
        client.stop_engines()  # not awaitable in 0.15
        client.stop()

    async def wait_for_engine_stop(self, engine) -> None:
        await super().wait_for_engine_stop(engine)  # also terminates the coordinator (rank 0)
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


class Mcore017(Adapter):
    """megatron-core 0.17 to 0.19 (and main's 0.20 development trees): InferenceConfig, hostname= binding,
    EngineState shutdown."""

    name = "0.17"

    def install_network_binding(self, bind_host: str) -> list[str]:
        self.bind_host = bind_host  # passed as hostname= in start_listening
        wrap_coordinator_entrypoint(None, bind_host)  # only so that the coordinator dies with rank 0
        return [f"engine, communicator and coordinator sockets bound to {bind_host} (hostname=)"]

    def build_context(self, model, plan: dict):
        from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

        return DynamicInferenceContext(model.config, self.inference_config(model, plan))

    def inference_config(self, model, plan: dict):
        """megatron-core's InferenceConfig of the plan (recorded whole in the inputs)."""
        from megatron.core.inference.config import InferenceConfig

        from logitsmatch.rank.models import mamba_inference_state

        inference = plan["inference"]
        caching = {}
        if inference.get("prefix_caching"):
            from megatron.core.inference.config import PrefixCachingEvictionPolicy

            caching = dict(enable_prefix_caching=True, prefix_caching_eviction_policy=PrefixCachingEvictionPolicy(
                inference["prefix_caching"]["eviction_policy"]))
            if "coordinator_policy" in inference["prefix_caching"]:  # the DP coordinator's routing
                from megatron.core.inference.config import PrefixCachingCoordinatorPolicy as Routing

                caching.update(prefix_caching_coordinator_policy=Routing(inference["prefix_caching"]["coordinator_policy"]))
        config = InferenceConfig(**self.record("context", dict(
            block_size_tokens=inference["block_size_tokens"],
            buffer_size_gb=inference["buffer_size_gb"],
            max_tokens=inference["max_tokens"],
            max_sequence_length=inference["max_sequence_length"],
            materialize_only_last_token_logits=not plan["sampling"]["return_log_probs"],
            use_flashinfer_fused_rope=inference["use_flashinfer_fused_rope"],
            enable_chunked_prefill=inference["enable_chunked_prefill"],
            unified_memory_level=0,
            max_requests=inference.get("context_max_requests"),
            **caching,
            **({"async_sched_mode": inference["async_sched_mode"]} if inference.get("async_sched_mode") else {}),
            **mamba_inference_state(model, plan),
            **self.work_consensus_every_loop(InferenceConfig),
        )))
        self.configs["inference_config"] = config
        return config

    @staticmethod
    def work_consensus_every_loop(inference_config_class) -> dict:
        """``ep_consensus_interval=1`` where the release has it (0.18+), so the ranks of one engine stay in step.

        From 0.18 the coordinator loop re-establishes its work consensus only every ``ep_consensus_interval``
        (20) loops and acts on the stale one in between: a rank without a request runs ``dummy_forward``, a
        collective over its tensor- and pipeline-parallel peers. The loop counter is per rank and counts idle
        loops too, so ranks whose counters differ run different numbers of dummy forwards and the one left
        waiting hangs: offsetting one rank's counter by one hangs the tiny TP2 x PP2 suite every time
        (docs/guides/case-family.md). Every loop, as 0.17 does it, keeps them in step; a dummy forward
        touches no request, so no result moves.
        """
        from dataclasses import fields

        names = {field.name for field in fields(inference_config_class)}
        return {"ep_consensus_interval": 1} if "ep_consensus_interval" in names else {}

    def build_wrapper(self, model, context, plan: dict):
        from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
            GPTInferenceWrapper,
        )

        return GPTInferenceWrapper(model, context)

    def make_engine(self, controller, context, plan: dict):
        from megatron.core.inference.engines import DynamicInferenceEngine

        return DynamicInferenceEngine(controller, context)

    def build_engine(self, model, tokenizer, plan: dict):
        # 0.17+ seed the controller's sampling RNG from the model config.
        model.config.inference_sampling_seed = plan["seed"]
        return super().build_engine(model, tokenizer, plan)

    async def start_listening(self, engine, sampling_params, network: dict) -> str:
        import inspect

        self.engine = engine  # the shutdown handshake waits on this rank's engine state
        start = engine.start_listening_to_data_parallel_coordinator
        schedule = {}
        if (
            network.get("coordinator_schedule_path")
            and "coordinator_schedule_output_path" in inspect.signature(start).parameters
        ):
            # the coordinator writes, when it stops, which engine it routed each request to
            schedule["coordinator_schedule_output_path"] = network["coordinator_schedule_path"]
        return await start(
            inference_coordinator_port=network["coordinator_port"],
            launch_inference_coordinator=True,
            hostname=self.bind_host,
            **schedule,
        )

    async def start_client(self, address: str):
        from megatron.core.inference.inference_client import InferenceClient

        client = InferenceClient(address, deserialize=True)
        client.start()
        return client

    async def shutdown(self, client) -> None:
        """STOP is honoured only from PAUSED; the coordinator outlives the engines."""
        from megatron.core.inference.engines.dynamic_engine import EngineState

        client.pause_engines()
        await self.engine.wait_until(EngineState.PAUSED)
        client.stop_engines()
        await self.engine.wait_until(EngineState.STOPPED)
        client.shutdown_coordinator()
        client.stop()


def for_installed_megatron() -> Adapter:
    """The adapter for the megatron-core this process imports.

    The release comes from megatron-core's own ``package_info`` (a source tree put first on
    PYTHONPATH keeps the venv's dist metadata); between 0.15 and 0.16 the context's signature
    decides, so a commit between the two releases gets the API it actually has.
    """
    version = installed_megatron_version()
    check_supported(version)
    if version[:2] in ((0, 15), (0, 16)):
        import inspect

        from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

        if "buffer_guaranteed_fraction" in inspect.signature(DynamicInferenceContext.__init__).parameters:
            return Mcore015()
        return Mcore016()
    return Mcore017()
