"""One rank of a logitsmatch run: megatron-core's real dynamic-inference stack.

Started by torch's elastic launcher (see ``launcher``), one process per rank.
Every rank builds the model shard, loads the checkpoint and joins the ZMQ
data-parallel coordinator; rank 0 also launches the coordinator, drives it
through a real ``InferenceClient`` and writes the result in Megatron's golden
format. Each rank records its current phase in ``STATUS_DIR/rank-N.json`` so a
failure can be reported by rank and phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

PHASES = ("init", "weights", "coordinator", "decode", "shutdown")


class PhaseRecorder:
    """Writes this rank's phase and the phase timings, atomically."""

    def __init__(self, status_dir: Path, rank: int):
        self.path = status_dir / f"rank-{rank}.json"
        self.timings: dict[str, float] = {}
        self._phase: str | None = None
        self._started = time.perf_counter()

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self._phase is not None:
            self.timings[self._phase] = now - self._started
        self._phase, self._started = phase, now
        self._write({"phase": phase, "pid": os.getpid(), "timings_s": self.timings})

    def finish(self) -> None:
        self.enter("done")

    def _write(self, payload: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.path)


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


async def drive_client(adapter, engine, coordinator_address: str, plan: dict, sampling_params) -> dict:
    """Rank 0: submit every prompt through the coordinator, gather, shut everything down."""
    client = await adapter.start_client(coordinator_address)
    futures = [client.add_request(prompt, sampling_params) for prompt in plan["prompts"]]
    records = [adapter.finished_request(result) for result in await asyncio.gather(*futures)]
    await adapter.shutdown(client)
    return {
        str(index): golden_record(record, plan["sampling"]["return_log_probs"])
        for index, record in enumerate(records)
    }


async def serve(adapter, engine, plan: dict, recorder: PhaseRecorder, rank: int):
    sampling_params = adapter.sampling_params(plan["sampling"], engine)
    coordinator_address = await adapter.start_listening(engine, sampling_params, plan["network"])
    results = None
    if rank == 0:
        network = {"coordinator": coordinator_address, "bind_host": plan["network"]["bind_host"]}
        (recorder.path.parent / "network.json").write_text(json.dumps(network))
        recorder.enter("decode")
        results = await drive_client(adapter, engine, coordinator_address, plan, sampling_params)
        recorder.enter("shutdown")
    await adapter.wait_for_engine_stop(engine)
    return results


def run(plan: dict) -> None:
    rank = int(os.environ["RANK"])
    status_dir = Path(plan["status_dir"])
    recorder = PhaseRecorder(status_dir, rank)
    recorder.enter("init")

    import torch

    from logitsmatch import cpu_standins

    standins: list[str] = []
    if plan["platform"]["stand_ins"]:
        standins += cpu_standins.install_torch_standins()

    from logitsmatch import adapters
    from logitsmatch.checkpoint import load_model_weights
    from logitsmatch.model_builder import build_gpt_model

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

    recorder.enter("coordinator")
    tokenizer = adapter.build_tokenizer(plan["tokenizer"])
    engine = adapter.build_engine(model, tokenizer, plan)
    if rank == 0:
        (status_dir / "stand_ins.json").write_text(json.dumps(standins))

    with torch.inference_mode():
        results = asyncio.run(serve(adapter, engine, plan, recorder, rank))

    if rank == 0:
        output = Path(plan["output"])
        tmp = output.with_suffix(".partial")
        tmp.write_text(json.dumps(results, indent=4))
        os.replace(tmp, output)
    recorder.finish()
    adapter.destroy_distributed()


def main(argv: list[str]) -> int:
    (plan_path,) = argv
    run(json.loads(Path(plan_path).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
