"""One rank of a logitsmatch run: megatron-core's real dynamic-inference stack.

Forked by the run's zygote (``rank.zygote``), one process per rank.
Every rank builds its shard of the model (its pipeline stage, its tensor and
expert slices), loads the checkpoint and joins the ZMQ data-parallel
coordinator through its engine; rank 0 also launches the coordinator, drives
it through a real ``InferenceClient`` and writes the result in Megatron's
golden format. Each rank records its current phase (``run.runfiles``) so a
failure can be reported by rank and phase, and its peak memory when it ends.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import hardware
from logitsmatch.run.runfiles import COORDINATOR_PORT_ENV, PhaseRecorder, RunDir


def golden_record(record, sampling: dict) -> dict:
    """One request in Megatron's golden format, as its inference driver writes it."""
    entry = {
        "input_prompt": record.prompt,
        "generated_text": record.generated_text,
        "generated_tokens": list(record.generated_tokens),
        "latency": record.latency,
    }
    if sampling["return_log_probs"]:
        entry["logprobs"] = list(record.prompt_log_probs or []) + list(record.generated_log_probs or [])
    if sampling.get("top_n_logprobs"):
        # per position {token text: logprob} of the n most likely tokens, keyed as Megatron's driver keys them
        entry["top_n_logprobs"] = record.generated_top_n_logprobs
        entry["prompt_top_n_logprobs"] = record.prompt_top_n_logprobs
    routing = getattr(record, "routing_indices", None)  # 0.17+ with --moe-enable-routing-replay
    if routing is not None:
        # [prompt + generated - 1 tokens, MoE layers, top-k] expert ids, as Megatron's driver writes them
        entry["routing_indices"] = routing.tolist()
    return entry


def failure(record) -> str | None:
    """Why megatron-core failed the request (None: it did not). A failed request comes back finished but with no
    tokens and no logprobs (0.19.2, a prompt over the context's max_sequence_length): written as a result, it would
    read as a golden of nothing."""
    if getattr(getattr(record, "status", None), "name", None) != "FAILED":
        return None
    errors = [f"{event.type.name} {type(event.payload).__name__}" for event in getattr(record, "events", None) or []
              if event.type.name.startswith("ERROR")]
    return ", ".join(errors) or "status FAILED, no error event"


def peak_rss_mib(pid: int | None = None) -> float | None:
    """VmHWM of this process (or of a live ``pid``), MiB.

    The coordinator is read from /proc, not from RUSAGE_CHILDREN: a 'spawn' child starts by fork,
    and Linux carries the parent's high-water mark across the exec. A forked coordinator (the CPU
    stand-in) counts the pages it still shares with rank 0.
    """
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


LISTENING_TIMEOUT_S = 300.0


async def wait_until_every_engine_listens(run: RunDir, world_size: int) -> None:
    """Rank 0, before the first request: every rank's engine receives its group's broadcasts
    (see adapters.report_when_listening). Awaits, so rank 0's own engine loop keeps publishing."""
    deadline = time.monotonic() + LISTENING_TIMEOUT_S
    while missing := run.not_listening(world_size):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the engines of ranks {missing} received no broadcast in {LISTENING_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)


async def drive_client(adapter, engine, coordinator_address: str, plan: dict, sampling_params,
                       recorder: PhaseRecorder, run: RunDir) -> dict:
    """Rank 0: submit the prompts through the coordinator as the plan's schedule says, gather, shut down."""
    await wait_until_every_engine_listens(run, plan["world_size"])
    client = await adapter.start_client(coordinator_address)
    records = await submit(client, adapter, plan["schedule"], sampling_params)
    results = golden_of(plan, records)
    record_coordinator_rss(engine, recorder)
    # Before the stop: from here on the coordinator may exit by design (the launcher watches for that).
    recorder.enter("shutdown")
    await adapter.shutdown(client)
    return results


def golden_of(plan: dict, records: list) -> dict:
    """Rank 0's finished requests (in submission order) as the golden, keyed by the suite's request ids."""
    for index, record in enumerate(records):
        # One client: the coordinator numbers the requests 0..N-1 in submission order; the engines
        # see those ids (served-by) and Megatron's driver keys its golden with them.
        if int(record.request_id) != index:
            raise RuntimeError(f"request {index} came back with coordinator request id {record.request_id}")
        why = failure(record)
        if why:
            raise RuntimeError(f"megatron-core failed request {index}: {why}")
    answers = {item["request_id"]: record for item, record in zip(plan["schedule"]["submit"], records, strict=True)}
    request_ids = sorted(key for key in answers if key is not None)  # a schedule's extra prompts are not kept
    return {
        str(request_id): golden_record(answers[request_id], plan["sampling"])
        for request_id in kept_results(request_ids, plan.get("output_every_n_results"))
    }


def kept_results(request_ids: list[int], every_n: int | None) -> list[int]:
    """The requests whose results are written: every one, or with --output-every-n-results every n-th and the last,
    as Megatron-LM's driver writes its golden."""
    if every_n is None:
        return request_ids
    last = len(request_ids) - 1
    return [rid for index, rid in enumerate(request_ids) if index % every_n == 0 or index == last]


def record_coordinator_rss(engine, recorder: PhaseRecorder) -> None:
    """Rank 0, before the coordinator is told to exit: its peak memory (None where the engine started none:
    MegatronLLM's direct mode)."""
    process = getattr(engine, "inference_coordinator_process", None)
    recorder.extra["coordinator_peak_rss_mib"] = None if process is None else peak_rss_mib(process.pid)


async def submit(client, adapter, schedule: dict, sampling_params) -> list:
    """The finished requests in submission order: all at once, or each after the previous finished (``alone``)."""
    prompts = [item["prompt"] for item in schedule["submit"]]
    if schedule["one_at_a_time"]:
        return [adapter.finished_request(await client.add_request(prompt, sampling_params)) for prompt in prompts]
    futures = [client.add_request(prompt, sampling_params) for prompt in prompts]
    return [adapter.finished_request(result) for result in await asyncio.gather(*futures)]


def network_plan_of(plan: dict, run: RunDir) -> dict:
    """Where the coordinator binds (the launcher's port, where it chose one) and writes its routing schedule."""
    network_plan = dict(plan["network"], coordinator_schedule_path=str(run.coordinator_schedule_file))
    if network_plan.get("coordinator_port") is None and os.environ.get(COORDINATOR_PORT_ENV):
        network_plan["coordinator_port"] = int(os.environ[COORDINATOR_PORT_ENV])
    return network_plan


async def serve(adapter, engine, plan: dict, run: RunDir, recorder: PhaseRecorder, rank: int):
    sampling_params = adapter.sampling_params(plan["sampling"], engine)
    network_plan = network_plan_of(plan, run)
    coordinator_address = await adapter.start_listening(engine, sampling_params, network_plan)
    recorder.enter("decode")  # every rank's engine loop now serves requests
    results = None
    if rank == 0:
        run.write_network(network_record(engine, coordinator_address, network_plan))
        results = await drive_client(adapter, engine, coordinator_address, plan, sampling_params, recorder, run)
    await adapter.wait_for_engine_stop(engine)
    if rank != 0:
        recorder.enter("shutdown")
    return results


def network_record(engine, coordinator_address: str, network_plan: dict) -> dict:
    """Where the coordinator listens (and the port asked for, if megatron had to pick another)."""
    process = getattr(engine, "inference_coordinator_process", None)
    record = {
        "coordinator": coordinator_address,
        "bind_host": network_plan["bind_host"],
        "coordinator_pid": getattr(process, "pid", None),
    }
    requested = network_plan.get("coordinator_port")
    if requested is not None and not str(coordinator_address).endswith(f":{requested}"):
        record["coordinator_port_requested"] = requested
        print(
            f"[logitsmatch] coordinator port {requested} was taken; megatron-core bound {coordinator_address}",
            file=sys.stderr,
        )
    return record


# megatron-core modules every engine run imports after the preamble; importing them in the zygote
# (after the stand-ins, where a fresh rank imports them too) spares each rank the import.
ENGINE_MODULES = (
    "megatron.core.dist_checkpointing",
    "megatron.core.tokenizers",
    "megatron.core.inference.engines",
    "megatron.core.inference.contexts",
    "megatron.core.inference.inference_client",
    "megatron.core.inference.data_parallel_inference_coordinator",
    "megatron.core.inference.text_generation_controllers.text_generation_controller",
    "megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper",
)


@dataclass
class Prepared:
    """What every rank of a plan sets up alike before its rank number matters."""

    adapter: object
    standins: list[str]


def prepare_process(plan: dict) -> Prepared:
    """The plan-level preamble of a rank: torch, the stand-ins, the adapter, the engine's modules.

    The zygote runs it once before forking the ranks on CPU; on CUDA each rank runs it
    after choosing its GPU. It starts no thread and touches no rank-specific state.
    """
    import importlib

    import torch

    from logitsmatch.rank import cpu_standins
    from logitsmatch.rank.models import is_hybrid

    standins: list[str] = []
    hybrid = is_hybrid(plan["architecture"])
    if plan["platform"]["stand_ins"]:
        standins += cpu_standins.install_torch_standins()
        if hybrid:
            standins += cpu_standins.install_mamba_standins()

    from logitsmatch.rank import adapters, capture, checkpoint, model_builder, request_intake  # noqa: F401

    adapter = adapters.for_installed_megatron()
    parallel = plan["parallel"]
    if plan["platform"]["stand_ins"]:
        standins += cpu_standins.install_megatron_standins(
            pipeline=parallel["pipeline"],
            experts=plan.get("moe") is not None,
            expert_parallel=parallel.get("expert", 1),
            hybrid=hybrid,
        )
    standins += adapter.install_network_binding(plan["network"]["bind_host"])

    if parallel.get("batch_invariant_mode"):  # --batch-invariant on a GPU: megatron-core's kernels for aten ops
        from megatron.core.transformer.custom_layers.batch_invariant_kernels import enable_batch_invariant_mode

        enable_batch_invariant_mode()
        standins.append("megatron-core batch_invariant_mode: aten mm/addmm/_log_softmax/mean replaced by its kernels")
    torch.set_num_threads(plan["platform"].get("torch_threads", 1))
    for name in ENGINE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # not in this release: the rank imports what it needs, and fails there if it must
            pass
    return Prepared(adapter, standins)


def run(plan: dict, run_dir: RunDir, prepared: Prepared | None) -> None:
    """One rank, in a process the zygote forked (``prepared`` by it on CPU, None on CUDA)."""
    rank = int(os.environ["RANK"])
    recorder = PhaseRecorder(run_dir, rank)
    recorder.enter("init")

    import torch

    if plan["platform"].get("device") == "cuda":  # one GPU per rank, before NCCL and the model see a device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    if prepared is None:
        prepared = prepare_process(plan)
    adapter, standins = prepared.adapter, list(prepared.standins)  # threads: set by the preamble, kept by fork

    from logitsmatch.rank.checkpoint import load_model_weights
    from logitsmatch.rank.models import build_model
    from logitsmatch.rank.request_intake import gather_served_by

    parallel = plan["parallel"]
    adapter.init_distributed(plan)
    model = build_model(
        plan["architecture"],
        parallel,
        plan["dtype"],
        plan["vocab_size"],
        plan["platform"]["layer_spec"],
        plan.get("moe"),
    )

    recorder.enter("weights")
    load_model_weights(model, Path(plan["checkpoint_dir"]))
    from logitsmatch.rank import capture as capture_module

    weights = capture_module.weights_record(model)
    capture = None
    if plan.get("capture"):
        capture = capture_module.Capture(model, run_dir.capture, rank, plan["capture"],
                                         adapter.engine_of_rank()).install()

    tokenizer = adapter.build_tokenizer(plan["tokenizer"])
    if not plan["schedule"]["engine"]:
        forward_only(model, tokenizer, plan, run_dir, recorder, rank, standins, weights, adapter, capture)
        return
    if plan["inference"].get("static_engine"):
        static_only(model, tokenizer, plan, run_dir, recorder, rank, standins, weights, adapter, capture)
        return
    recorder.enter("coordinator")
    if plan["inference"].get("offline_driver"):  # megatron-core's MegatronLLM builds and drives the engine
        offline_only(model, tokenizer, plan, run_dir, recorder, rank, standins, weights, adapter, capture)
        return
    engine = adapter.build_engine(model, tokenizer, plan)
    intake = adapter.take_requests(engine, plan["inference"].get("hold_requests"))
    standins += intake.description()
    standins += adapter.report_when_listening(engine, lambda: run_dir.mark_listening(rank))
    if rank == 0:
        run_dir.write_stand_ins(standins)
    run_dir.write_inputs(rank, rank_inputs(rank, weights, adapter, model))

    with torch.inference_mode():
        results = asyncio.run(serve(adapter, engine, plan, run_dir, recorder, rank))

    if capture is not None:
        capture.close()  # a run shorter than the capture window
    served_by = gather_served_by(intake)  # every rank takes part
    if rank == 0:
        run_dir.write_served_by(served_by)
        run_dir.write_result(results)
    recorder.finish(peak_rss_mib=peak_rss_mib())
    adapter.destroy_distributed()


def offline_only(model, tokenizer, plan: dict, run_dir: RunDir, recorder: PhaseRecorder, rank: int,
                 standins: list[str], weights: dict, adapter, capture) -> None:
    """Megatron-LM's offline driver (rank.offline_driver): the same files as a run of our own ZMQ client."""
    from logitsmatch.rank.offline_driver import run_offline
    from logitsmatch.rank.request_intake import gather_served_by

    network_plan = network_plan_of(plan, run_dir)
    served = run_offline(adapter, model, tokenizer, plan, run_dir, recorder, rank, standins, network_plan,
                         before_submit=lambda: wait_until_every_engine_listens(run_dir, plan["world_size"]),
                         after_generate=lambda engine: record_coordinator_rss(engine, recorder))
    run_dir.write_inputs(rank, rank_inputs(rank, weights, adapter, model))  # with the InferenceConfig the API ran
    if capture is not None:
        capture.close()
    served_by = gather_served_by(served.intake)  # every rank takes part
    if rank == 0:
        if served.coordinator is not None:  # direct mode wrote its record (no coordinator) before serving
            run_dir.write_network(network_record(served.engine, served.coordinator, network_plan))
        run_dir.write_served_by(served_by)
        run_dir.write_result(golden_of(plan, served.records))
    recorder.finish(peak_rss_mib=peak_rss_mib())
    adapter.destroy_distributed()


def rank_inputs(rank: int, weights: dict, adapter, model) -> dict:
    """What this rank computes with, beyond the plan: what `explain` compares between two runs."""
    from logitsmatch.rank.config_record import dataclass_record
    from logitsmatch.rank.megatron_release import megatron_identity

    return {
        "rank": rank,
        "weights": weights,
        "hardware": hardware.probe(),
        "megatron_core": megatron_identity(),
        **adapter.describe(),
        "transformer_config": dataclass_record(model.config),
    }


def forward_only(model, tokenizer, plan: dict, run_dir: RunDir, recorder: PhaseRecorder, rank: int, standins: list[str],
                 weights: dict, adapter, capture) -> None:
    """The ``forward`` schedule (rank.training_forward): no engine, no coordinator; the same files as an engine run."""
    from logitsmatch.rank.training_forward import run_forward

    without_coordinator(lambda: run_forward(model, tokenizer, plan, rank), model, plan, run_dir, recorder, rank,
                        standins, weights, adapter, capture)


def static_only(model, tokenizer, plan: dict, run_dir: RunDir, recorder: PhaseRecorder, rank: int, standins: list[str],
                weights: dict, adapter, capture) -> None:
    """The static engine (rank.static_engine): one batch, no coordinator; the same files as a dynamic-engine run."""
    from logitsmatch.rank.static_engine import build_static_engine, install_static_standins, run_static

    recorder.enter("coordinator")  # the engine's set-up, where a dynamic run starts its coordinator
    engine = build_static_engine(adapter, model, tokenizer, plan)
    standins = standins + install_static_standins(plan["platform"]["stand_ins"])
    without_coordinator(lambda: run_static(engine, plan, rank), model, plan, run_dir, recorder, rank, standins,
                        weights, adapter, capture)


def without_coordinator(compute, model, plan: dict, run_dir: RunDir, recorder: PhaseRecorder, rank: int,
                        standins: list[str], weights: dict, adapter, capture) -> None:
    """Every rank runs ``compute()`` (rank 0's answer is the result) with no coordinator, writing what a
    coordinator run writes."""
    import torch

    if rank == 0:
        run_dir.write_stand_ins(standins)
        run_dir.write_network({"coordinator": None, "bind_host": plan["network"]["bind_host"], "coordinator_pid": None})
    run_dir.write_inputs(rank, rank_inputs(rank, weights, adapter, model))
    recorder.enter("decode")
    with torch.inference_mode():
        results = compute()
    if capture is not None:
        capture.close()
    torch.distributed.barrier()
    recorder.enter("shutdown")
    if rank == 0:
        run_dir.write_result(results)
    recorder.finish(peak_rss_mib=peak_rss_mib())
    adapter.destroy_distributed()
