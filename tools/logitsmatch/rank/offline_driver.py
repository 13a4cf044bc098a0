"""Megatron-LM's offline driver (examples/inference/offline_inference.py), driven as that driver does.

With ``--use-coordinator`` the driver hands the model to megatron-core's high-level API: ``MegatronLLM``
(sync) or, with ``--async-mode``, ``MegatronAsyncLLM`` (0.18+). The API builds the dynamic context, the
wrapper, the controller and the engine itself, starts the data-parallel coordinator and, on global rank 0,
an ``InferenceClient`` on a background event loop; rank 0 calls ``generate`` with every prompt and the
other ranks serve until the API's shutdown stops them. Without either flag (the driver's default, "sync,
direct"; a suite asks for it with ``driver: offline_inference``) ``MegatronLLM(use_coordinator=False)``
builds the same engine and its ``generate`` drives it in-process: every request added, then stepped until
all finish; no coordinator, no client, every rank its own caller. Here the same objects run, with the
plan's InferenceConfig (the driver's ``max_sequence_length``: the longest prompt plus the tokens to
generate), and the harness's usual records around them: which engine was given which request
(``RequestIntake``), the coordinator's address and its routing schedule (where there is a coordinator and
the release writes one), each rank's phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from dataclasses import dataclass

COORDINATOR_EXIT_S = 30.0  # the coordinator's own exit after SHUTDOWN (it writes its routing schedule as it goes)


@contextlib.contextmanager
def listening_recorded(network_plan: dict, record: dict, on_listening):
    """While the API is built, its call of the engine's ``start_listening_to_data_parallel_coordinator`` (with the
    host and port the API was given) also names the file the coordinator writes its routing schedule to, where the
    release takes one, the address it returns goes into ``record`` (the API passes neither on), and
    ``on_listening(engine)`` runs before the engine loop's first turn. Only this rank's process is patched, and
    only for the duration."""
    from megatron.core.inference.engines.dynamic_engine import DynamicInferenceEngine

    real = DynamicInferenceEngine.start_listening_to_data_parallel_coordinator
    takes_schedule = "coordinator_schedule_output_path" in inspect.signature(real).parameters

    async def start_listening(engine, *args, **kwargs):
        if takes_schedule:
            kwargs["coordinator_schedule_output_path"] = network_plan["coordinator_schedule_path"]
        record["coordinator"] = address = await real(engine, *args, **kwargs)
        on_listening(engine)  # the loop task real() created has not run yet: this coroutine has not yielded
        return address

    DynamicInferenceEngine.start_listening_to_data_parallel_coordinator = start_listening
    try:
        yield
    finally:
        DynamicInferenceEngine.start_listening_to_data_parallel_coordinator = real


def driver_config(adapter, model, tokenizer, plan: dict):
    """The InferenceConfig the driver hands the API: the plan's, its max_sequence_length the longest prompt plus
    the tokens to generate, as the driver sets it."""
    config = adapter.inference_config(model, plan)
    longest = max(len(tokenizer.tokenize(item["prompt"])) for item in plan["schedule"]["submit"])
    config.max_sequence_length = longest + plan["sampling"]["num_tokens_to_generate"]
    adapter.record("offline_driver", {**plan["inference"]["offline_driver"],
                                      "max_sequence_length": config.max_sequence_length})
    return config


def build_llm(adapter, model, tokenizer, plan: dict, network_plan: dict, record: dict, on_listening):
    """megatron-core's MegatronLLM or MegatronAsyncLLM on every rank: behind the coordinator each starts its
    engine loop (``record`` gets the coordinator's address, and ``on_listening(engine)`` runs before the loop's
    first turn); in direct mode it only builds the engine."""
    from megatron.core.inference import apis

    driver = plan["inference"]["offline_driver"]
    api = getattr(apis, driver["api"])
    model.config.inference_sampling_seed = plan["seed"]  # the controller's sampling RNG, as build_engine seeds it
    config = driver_config(adapter, model, tokenizer, plan)
    if not driver["use_coordinator"]:
        return api(model=model, tokenizer=tokenizer, inference_config=config, use_coordinator=False)
    with listening_recorded(network_plan, record, on_listening):
        return api(model=model, tokenizer=tokenizer, inference_config=config, use_coordinator=True,
                   coordinator_host=network_plan["bind_host"], coordinator_port=network_plan["coordinator_port"])


def batches(schedule: dict) -> list[list[str]]:
    """The ``generate`` calls of the schedule: every prompt in one call, or one call per prompt (``alone``)."""
    prompts = [item["prompt"] for item in schedule["submit"]]
    return [[prompt] for prompt in prompts] if schedule["one_at_a_time"] else [prompts]


@dataclass
class Served:
    """What an offline run leaves on a rank: rank 0's finished requests (in submission order) and the
    coordinator's address (None in direct mode: there is none); on every rank its engine and the intake that
    recorded what it was given."""

    records: list | None
    coordinator: str | None
    engine: object
    intake: object


def direct_network(network_plan: dict) -> dict:
    """Rank 0's network record in direct mode, written before it serves: no coordinator to watch or route."""
    return {"coordinator": None, "bind_host": network_plan["bind_host"], "coordinator_pid": None,
            "offline_driver": "MegatronLLM direct mode: generate drives the engine in-process; no coordinator, "
                              "no client, no routing schedule"}


def serve_sync(llm, plan: dict, sampling_params, recorder, before_submit, after_generate) -> list | None:
    """MegatronLLM: rank 0 generates and shuts the engines down; the others wait in the shutdown (in direct mode
    every rank is primary: each generates, and the shutdown has nothing to stop)."""
    with llm:
        recorder.enter("decode")
        records = None
        if llm.is_primary_rank:
            asyncio.run(before_submit())
            records = [record for prompts in batches(plan["schedule"])
                       for record in llm.generate(prompts, sampling_params)]
            after_generate(llm.engine)
        recorder.enter("shutdown")
    return records


async def serve_async(llm, plan: dict, sampling_params, recorder, before_submit, after_generate) -> list | None:
    """MegatronAsyncLLM, the same from the caller's event loop."""
    async with llm:
        recorder.enter("decode")
        records = None
        if llm.is_primary_rank:
            await before_submit()
            records = []
            for prompts in batches(plan["schedule"]):
                records += await llm.generate(prompts, sampling_params)
            after_generate(llm.engine)
        recorder.enter("shutdown")
    return records


def run_offline(adapter, model, tokenizer, plan: dict, run_dir, recorder, rank: int, standins: list[str],
                network_plan: dict, before_submit, after_generate) -> Served:
    """Build the API on this rank, serve the plan's schedule through it (rank 0 awaits ``before_submit()`` first
    and calls ``after_generate(engine)`` before the shutdown), and shut down."""
    import torch

    direct = not plan["inference"]["offline_driver"]["use_coordinator"]
    address: dict = {"coordinator": None}
    reported: list[str] = []

    def on_listening(engine) -> None:
        reported.extend(adapter.report_when_listening(engine, lambda: run_dir.mark_listening(rank)))

    llm = build_llm(adapter, model, tokenizer, plan, network_plan, address, on_listening)
    intake = adapter.take_requests(llm.engine, plan["inference"].get("hold_requests"))
    standins = standins + intake.description() + reported
    if direct:  # no broadcast to wait for: generate hands this rank's engine its requests in-process
        run_dir.mark_listening(rank)
        if rank == 0:
            run_dir.write_network(direct_network(network_plan))
    if rank == 0:
        run_dir.write_stand_ins(standins)
    sampling_params = adapter.sampling_params(plan["sampling"], llm.engine)
    serving = (before_submit, after_generate)
    with torch.inference_mode():
        if plan["inference"]["offline_driver"]["api"] == "MegatronAsyncLLM":
            records = asyncio.run(serve_async(llm, plan, sampling_params, recorder, *serving))
        else:
            records = serve_sync(llm, plan, sampling_params, recorder, *serving)
    process = getattr(llm.engine, "inference_coordinator_process", None)
    if process is not None:  # rank 0: the API's shutdown told the coordinator to exit; it writes its schedule then
        process.join(timeout=COORDINATOR_EXIT_S)
    return Served(records, address["coordinator"], llm.engine, intake)
