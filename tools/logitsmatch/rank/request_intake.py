"""Which requests a rank's engine is given, and when it adds them (every release, 0.15 to 0.19)."""

from __future__ import annotations


class RequestIntake:
    """What this rank's engine is given by the coordinator: which requests, and when it adds them.

    Wraps the engine's ``add_request`` (the coordinator path calls it with the coordinator's request
    id first, on every rank of the engine, 0.15 to 0.19):

    * it records the request ids, so that after the run ``gather_served_by`` can say which
      data-parallel engine served which request (megatron-core's reply names no engine before
      0.17's coordinator schedule);
    * with ``hold`` = N (one engine receives every prompt, see ``run.plan.hold_requests``) it holds
      the requests until N have arrived and then adds them together, so the batch schedule does not
      depend on when each ZMQ message arrived. Every rank of the engine receives the same messages in
      the same order. With ``hold`` None each request is added as it arrives.
    """

    def __init__(self, engine, hold: int | None, dp_rank: int = 0):
        self.request_ids: list[int] = []
        self.hold = hold
        self.dp_rank = dp_rank  # read while the model-parallel state lives (0.15's engine stop tears it down)
        real, held = engine.add_request, []

        def add_request(request_id, *args, **kwargs):
            self.request_ids.append(int(request_id))
            if hold is None:
                real(request_id, *args, **kwargs)
                return
            held.append((request_id, args, kwargs))
            if len(held) == hold:
                for held_id, held_args, held_kwargs in held:
                    real(held_id, *held_args, **held_kwargs)
                held.clear()
            # the coordinator path ignores add_request's result: nothing to return

        engine.add_request = add_request

    def description(self) -> list[str]:
        if self.hold is None:
            return []
        return [f"engine adds the {self.hold} submitted requests together once all have arrived "
                "(deterministic batch schedule)"]


def gather_served_by(intake: RequestIntake) -> dict[str, int] | None:
    """All ranks: {coordinator request id: data-parallel rank of the engine that served it} on rank 0."""
    import torch

    mine = {"dp_rank": intake.dp_rank, "request_ids": intake.request_ids}
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    if torch.distributed.get_rank() != 0:
        return None
    served: dict[int, int] = {}
    for entry in everyone:
        for request_id in entry["request_ids"]:
            if served.setdefault(request_id, entry["dp_rank"]) != entry["dp_rank"]:
                raise RuntimeError(f"request {request_id} was added by engines {served[request_id]} "
                                   f"and {entry['dp_rank']}")
    return {str(request_id): served[request_id] for request_id in sorted(served)}
