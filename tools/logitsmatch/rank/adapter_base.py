"""What every supported megatron-core release (0.15 to 0.19) does the same way: the base of the release adapters.

``rank.adapters`` holds one subclass per span of releases, each overriding only what its releases changed; the
worker only calls adapter methods. Apart so that the API every release shares reads in one place.
"""

from __future__ import annotations

from logitsmatch.rank import megatron_release
from logitsmatch.rank.request_intake import RequestIntake


class Adapter:
    """What every supported release (0.15 to 0.19) does the same way."""

    name = "base"

    def __init__(self):
        self.decisions: dict = {}  # what this adapter passed to megatron-core (recorded in provenance)
        self.configs: dict = {}  # the inference config objects it built, whole (recorded in the inputs)

    def record(self, what: str, kwargs: dict) -> dict:
        self.decisions[what] = {key: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
                                for key, value in kwargs.items()}
        return kwargs

    def describe(self) -> dict:
        from logitsmatch.rank.config_record import dataclass_record

        return {"adapter": type(self).__name__, "decisions": self.decisions,
                "configs": {name: dataclass_record(config) for name, config in self.configs.items()}}

    # --- distributed -------------------------------------------------------------
    def init_distributed(self, plan: dict) -> None:
        import torch
        from megatron.core import parallel_state

        torch.distributed.init_process_group(backend=plan["platform"]["backend"])
        parallel = plan["parallel"]
        # DP is what remains of the world (megatron's rule, as the plan computed it); the experts'
        # grid re-slices each pipeline stage's TP x DP ranks as ETP x EP x expert-DP.
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=parallel["tensor"],
            pipeline_model_parallel_size=parallel["pipeline"],
            expert_model_parallel_size=parallel.get("expert", 1),
            expert_tensor_parallel_size=parallel.get("expert_tensor", parallel["tensor"]),
        )
        if parallel_state.get_data_parallel_world_size() != parallel.get("data", 1):
            raise RuntimeError(f"megatron-core derived DP {parallel_state.get_data_parallel_world_size()}, "
                               f"the plan says {parallel.get('data', 1)}")
        # megatron's inference RNG tracker, which Megatron-LM's driver registers through
        # model_parallel_cuda_manual_seed (CUDA only): code outside the dynamic path (the idle
        # engine's expert-parallel dummy forward) forks its 'model-parallel-rng' state. Inference
        # has no dropout, so nothing draws from it.
        from megatron.core.tensor_parallel import random as tp_random

        tp_random.initialize_rng_tracker(inference_rng_tracker=True)

    def engine_of_rank(self) -> dict:
        """This rank's data-parallel engine: its DP rank, its ranks (the model-parallel group) and how many engines
        there are, for the capture."""
        import torch
        from megatron.core import parallel_state

        ranks = torch.distributed.get_process_group_ranks(parallel_state.get_model_parallel_group())
        return {"index": parallel_state.get_data_parallel_rank(), "ranks": sorted(ranks),
                "engines": parallel_state.get_data_parallel_world_size()}

    def destroy_distributed(self) -> None:
        import torch
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()

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
    def build_engine(self, model, tokenizer, plan: dict):
        from megatron.core.inference.text_generation_controllers.text_generation_controller import (
            TextGenerationController,
        )

        context = self.build_context(model, plan)
        wrapper = self.build_wrapper(model, context, plan)
        controller = TextGenerationController(inference_wrapped_model=wrapper, tokenizer=tokenizer)
        return self.make_engine(controller, context, plan)

    def sampling_params(self, sampling: dict, engine):
        from megatron.core.inference.sampling_params import SamplingParams

        fields = ("temperature", "top_k", "top_p", "return_log_probs", "num_tokens_to_generate")
        asked = {name: sampling[name] for name in ("top_n_logprobs", "stop_words") if sampling.get(name)}
        return SamplingParams(**{name: sampling[name] for name in fields}, **asked,
                              **self.termination_kwargs(engine, sampling))

    def lacks_sampling_fields(self, names) -> list[str]:
        """The SamplingParams fields among ``names`` this release lacks (0.16 to 0.19 have both of ours)."""
        import dataclasses

        from megatron.core.inference.sampling_params import SamplingParams

        return sorted(set(names) - {field.name for field in dataclasses.fields(SamplingParams)})

    def termination_kwargs(self, engine, sampling: dict) -> dict:
        """From 0.16 the end-of-document id (or the suite's --termination-id) travels with each request's
        sampling params."""
        return {"termination_id": sampling.get("termination_id", engine.controller.tokenizer.eod)}

    def report_when_listening(self, engine, report) -> list[str]:
        """Call ``report()`` once this rank's engine has received its first broadcast.

        An engine's first rank (the MP coordinator) republishes what the coordinator sends it to the
        other ranks of its engine over ZMQ PUB/SUB, every loop turn (a message count, 0.15/0.16, or a
        batch, 0.17+). A SUB connection is made in the background: megatron-core's barrier after
        connect() does not wait for it, and a PUB drops what it sends before the subscription has
        arrived. On a loaded host that window can outlast the client's start, and a rank that missed
        a request's broadcast never steps while its peers wait for it in a collective: the run hangs
        (seen: a TP2 x PP2 x DP2 run at load average 47). ``schedule_requests`` returns on a
        subscriber only after it received a broadcast, so its first return proves the subscription
        live; the driver submits once every rank has reported (``drive_client``). Before the first turn
        the ranks make sure every subscription of the engine's broadcasts is live (``subscription_handshake``):
        a rank that missed even the first, empty broadcast deadlocks an engine whose every turn holds a
        collective, as an expert-parallel engine's work consensus does. No value changes.
        """
        from logitsmatch.rank.subscription_handshake import subscriptions_live

        real, reported = engine.schedule_requests, []

        def schedule_requests(*args, **kwargs):
            if not reported:
                subscriptions_live(engine)
            result = real(*args, **kwargs)
            if not reported:
                reported.append(True)
                report()
            return result

        engine.schedule_requests = schedule_requests
        return ["every rank confirms its subscriptions to its engine's ZMQ broadcasts before the first loop turn, "
                "and the client submits once every rank's engine has received a broadcast of its group (no "
                "broadcast lost to a slow joiner)"]

    def take_requests(self, engine, hold: int | None) -> RequestIntake:
        """Route the coordinator's requests to ``engine`` through a ``RequestIntake``."""
        from megatron.core import parallel_state

        return RequestIntake(engine, hold, parallel_state.get_data_parallel_rank())

    # --- what a release has (asked by the harness before it plans) --------------
    def supports_chunked_prefill(self) -> bool:
        """The engine takes ``enable_chunked_prefill`` (0.15, 0.16) or InferenceConfig has it (0.17+)."""
        import dataclasses
        import inspect

        from megatron.core.inference.engines import DynamicInferenceEngine

        if "enable_chunked_prefill" in inspect.signature(DynamicInferenceEngine.__init__).parameters:
            return True
        try:
            from megatron.core.inference.config import InferenceConfig
        except ImportError:
            return False
        return "enable_chunked_prefill" in {field.name for field in dataclasses.fields(InferenceConfig)}

    def supports_prefix_caching(self) -> bool:
        """InferenceConfig has ``enable_prefix_caching`` (0.17+; 0.15 and 0.16 have no prefix caching)."""
        import dataclasses

        try:
            from megatron.core.inference.config import InferenceConfig
        except ImportError:
            return False
        return "enable_prefix_caching" in {field.name for field in dataclasses.fields(InferenceConfig)}

    coordinator_policies = staticmethod(megatron_release.coordinator_policies)  # prefix caching's routing (0.17+)
    has_offline_api = staticmethod(megatron_release.has_offline_api)  # MegatronLLM, MegatronAsyncLLM (0.18+)

    def has_batch_invariant_mode(self) -> bool:
        """TransformerConfig has ``batch_invariant_mode`` (megatron-core's batch-invariant kernels)."""
        import dataclasses

        from megatron.core.transformer.transformer_config import TransformerConfig

        return "batch_invariant_mode" in {field.name for field in dataclasses.fields(TransformerConfig)}

    # --- coordinator and client --------------------------------------------------
    def finished_request(self, result):
        """0.16 returns records (one request per pause/resume segment); merge them."""
        return result.merge() if hasattr(result, "merge") else result

    async def wait_for_engine_stop(self, engine) -> None:
        await engine.engine_loop_task
