"""Reproduce the engine hangs of docs/guides/case-family.md: one rank's subscription to its engine's broadcasts
goes live late, as a slow joiner's does on a loaded host, either in the loop (REPRO_LATE_S: the loop hang of
megatron-core 0.18+) or at start-up (REPRO_STARTUP_LATE_S: the start-up deadlock of an expert-parallel engine).

Not part of the harness: put this folder first on PYTHONPATH of a ``logitsmatch run`` (the ranks inherit it),

    REPRO_RANK=2 REPRO_LATE_S=0.3 REPRO_OUT=DIR PYTHONPATH=scripts/engine_loop_repro \\
        .nox/toolchains/py3.12-torch2.14.1-mcore0.19.2/bin/logitsmatch run \\
        gpt_dynamic_inference_tp2_pp2_tiny_chunked_prefill --toolchain py3.12-torch2.14.1-mcore0.19.2 --timeout 150

On its first loop turn rank REPRO_RANK (not its engine's first rank) unsubscribes for REPRO_LATE_S seconds, so
the empty broadcasts of that window never reach it; each rank writes ``DIR/rank<N>.json``: its loop turns
(``schedule_requests`` calls), dummy forwards, and the engine's loop counter and ``ep_consensus_interval``.

With REPRO_STARTUP_LATE_S instead, rank REPRO_RANK's SUB subscriptions (its engine's broadcast sockets) take
effect that many seconds after megatron-core asks for them, from a timer thread, as subscriptions that reach
the publisher late do: the engine's first broadcasts are dropped for that rank.
"""

import json
import os

if os.environ.get("REPRO_STARTUP_LATE_S"):
    import threading

    import zmq

    real_setsockopt_string = zmq.Socket.setsockopt_string

    def setsockopt_string(self, option, value, encoding="utf-8"):
        import torch.distributed

        if (option == zmq.SUBSCRIBE and self.socket_type == zmq.SUB and torch.distributed.is_initialized()
                and torch.distributed.get_rank() == int(os.environ.get("REPRO_RANK", "-1"))):
            late = float(os.environ["REPRO_STARTUP_LATE_S"])
            threading.Timer(late, real_setsockopt_string, (self, option, value, encoding)).start()
            return None
        return real_setsockopt_string(self, option, value, encoding)

    zmq.Socket.setsockopt_string = setsockopt_string

if os.environ.get("REPRO_OUT"):
    from megatron.core.inference.engines import dynamic_engine

    Engine = dynamic_engine.DynamicInferenceEngine
    real_run, real_schedule = Engine.run_engine_with_coordinator, Engine.schedule_requests
    counts = {"loop_turns": 0, "dummy_forwards": 0, "late_subscription_s": 0.0}

    def write_counts(engine) -> None:
        import torch.distributed

        counts["loop_counter"] = getattr(engine, "_ep_consensus_loop_counter", None)
        counts["ep_consensus_interval"] = getattr(engine, "ep_consensus_interval", None)
        with open(f"{os.environ['REPRO_OUT']}/rank{torch.distributed.get_rank()}.json", "w") as out:
            json.dump(counts, out)

    async def run_engine_with_coordinator(self, *, loop=None):
        real_dummy = self.controller.dummy_forward

        def dummy_forward(*args, **kwargs):
            counts["dummy_forwards"] += 1
            write_counts(self)  # a rank that hangs in this forward has written how far it got
            return real_dummy(*args, **kwargs)

        self.controller.dummy_forward = dummy_forward
        try:
            return await real_run(self, loop=loop)
        finally:
            write_counts(self)

    def schedule_requests(self):
        import torch.distributed

        counts["loop_turns"] += 1
        late = float(os.environ.get("REPRO_LATE_S", "0"))
        if (counts["loop_turns"] == 1 and late and not self.is_mp_coordinator
                and torch.distributed.get_rank() == int(os.environ.get("REPRO_RANK", "-1"))):
            import time

            import zmq

            self.model_parallel_subscriber_socket.setsockopt_string(zmq.UNSUBSCRIBE, "")
            time.sleep(late)  # what the engine's first rank publishes meanwhile is dropped for this rank
            self.model_parallel_subscriber_socket.setsockopt_string(zmq.SUBSCRIBE, "")
            counts["late_subscription_s"] = late
        return real_schedule(self)

    Engine.run_engine_with_coordinator = run_engine_with_coordinator
    Engine.schedule_requests = schedule_requests
