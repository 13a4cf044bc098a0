"""One rank of a logitsmatch run: megatron-core's real dynamic-inference stack.

Started by torch's elastic launcher (see ``launcher``), one process per rank.
Every rank builds the model shard, loads the checkpoint and joins the ZMQ
data-parallel coordinator; rank 0 also launches the coordinator, drives it
through a real ``InferenceClient`` and writes the result in Megatron's golden
format. Each rank records its current phase (``run.runfiles``) so a failure
can be reported by rank and phase.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from logitsmatch.lifetime import die_with_parent
from logitsmatch.run.runfiles import COORDINATOR_PORT_ENV, PhaseRecorder, RunDir


def golden_record(record, return_log_probs: bool) -> dict:
    """One request in Megatron's golden format, as its inference driver writes it."""
    entry = {
        "input_prompt": record.prompt,
        "generated_text": record.generated_text,
        "generated_tokens": list(record.generated_tokens),
        "latency": record.latency,
    }
    if return_log_probs:
        entry["logprobs"] = list(record.prompt_log_probs or []) + list(record.generated_log_probs or [])
    return entry


async def drive_client(adapter, engine, coordinator_address: str, plan: dict, sampling_params,
                       recorder: PhaseRecorder) -> dict:
    """Rank 0: submit every prompt through the coordinator, gather, shut everything down."""
    client = await adapter.start_client(coordinator_address)
    futures = [client.add_request(prompt, sampling_params) for prompt in plan["prompts"]]
    records = [adapter.finished_request(result) for result in await asyncio.gather(*futures)]
    # Before the stop: from here on the coordinator may exit by design (the launcher watches for that).
    recorder.enter("shutdown")
    await adapter.shutdown(client)
    return {
        str(index): golden_record(record, plan["sampling"]["return_log_probs"])
        for index, record in enumerate(records)
    }


async def serve(adapter, engine, plan: dict, run: RunDir, recorder: PhaseRecorder, rank: int):
    sampling_params = adapter.sampling_params(plan["sampling"], engine)
    network_plan = dict(plan["network"])
    if network_plan.get("coordinator_port") is None and os.environ.get(COORDINATOR_PORT_ENV):
        network_plan["coordinator_port"] = int(os.environ[COORDINATOR_PORT_ENV])
    coordinator_address = await adapter.start_listening(engine, sampling_params, network_plan)
    recorder.enter("decode")  # every rank's engine loop now serves requests
    results = None
    if rank == 0:
        run.write_network(network_record(engine, coordinator_address, network_plan))
        results = await drive_client(adapter, engine, coordinator_address, plan, sampling_params, recorder)
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


def run(plan: dict, run_dir: RunDir) -> None:
    rank = int(os.environ["RANK"])
    die_with_parent(sig=signal.SIGTERM)  # torchrun's agent gone without stopping this rank (e.g. SIGKILL)
    recorder = PhaseRecorder(run_dir, rank)
    recorder.enter("init")

    import torch

    from logitsmatch.rank import cpu_standins

    if plan["platform"].get("device") == "cuda":  # one GPU per rank, before NCCL and the model see a device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    standins: list[str] = []
    if plan["platform"]["stand_ins"]:
        standins += cpu_standins.install_torch_standins()

    from logitsmatch.rank import adapters
    from logitsmatch.rank.checkpoint import load_model_weights
    from logitsmatch.rank.model_builder import build_gpt_model

    adapter = adapters.for_installed_megatron()
    if plan["platform"]["stand_ins"]:
        standins += cpu_standins.install_megatron_standins()
    standins += adapter.install_network_binding(plan["network"]["bind_host"])

    torch.set_num_threads(plan["platform"].get("torch_threads", 1))
    adapter.init_distributed(plan)
    model = build_gpt_model(
        plan["architecture"], plan["parallel"], plan["dtype"], plan["vocab_size"], plan["platform"]["layer_spec"]
    )

    recorder.enter("weights")
    load_model_weights(model, Path(plan["checkpoint_dir"]))
    from logitsmatch.rank import capture as capture_module

    weights = capture_module.weights_record(model)
    capture = None
    if plan.get("capture"):
        capture = capture_module.Capture(model, run_dir.capture, rank, plan["capture"]).install()

    recorder.enter("coordinator")
    tokenizer = adapter.build_tokenizer(plan["tokenizer"])
    engine = adapter.build_engine(model, tokenizer, plan)
    standins += adapter.hold_requests_until_all_arrived(engine, len(plan["prompts"]))
    if rank == 0:
        run_dir.write_stand_ins(standins)
    # What this rank computes with, beyond the plan: what `explain` compares between two runs.
    run_dir.write_inputs(rank, {"rank": rank, "weights": weights,
                                "megatron_core": adapters.megatron_identity(), **adapter.describe()})

    with torch.inference_mode():
        results = asyncio.run(serve(adapter, engine, plan, run_dir, recorder, rank))

    if capture is not None:
        capture.close()  # a run shorter than the capture window
    if rank == 0:
        run_dir.write_result(results)
    recorder.finish()
    adapter.destroy_distributed()


def main(argv: list[str]) -> int:
    (plan_path,) = argv
    run_dir = RunDir(Path(plan_path).parent)
    run(run_dir.read_plan(), run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
