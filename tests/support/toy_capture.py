"""A toy model and its engine steps, captured as a rank captures the GPTModel (the hooks are the rank's own).

An embedding that sees one row at a time, then a module whose output depends on how many rows share the step (a
planted batch dependence), then a row-wise head; ``step`` runs one engine step over real rows padded as the engine
pads them, with the context fields the capture reads to name each row by its request.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from logitsmatch.judge.localize import CaptureSet, read_capture
from logitsmatch.rank import capture as capture_module

PROMPTS = {7: [5, 3, 9], 8: [4, 6]}  # request id -> prompt tokens
PADDED = 8  # the engine pads every step to this many rows


class BatchDependent(torch.nn.Module):
    """Row-wise, except that every row moves by 1e-3 per other real row in the step."""

    def forward(self, hidden, active):
        return hidden * (1.0 + 1e-3 * (active - 1))


class ToyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(16, 4)
        self.mix = BatchDependent()
        self.head = torch.nn.Linear(4, 16)

    def forward(self, input_ids, position_ids, inference_context=None):
        hidden = self.embedding(input_ids[0])
        return self.head(self.mix(hidden, inference_context.active_token_count))


def step(model, rows: list[tuple[int, int, int]]) -> int:
    """One engine step over real rows (request id, position, token), padded to PADDED; returns the greedy token
    of each request's last row (its next input)."""
    slots = {request: slot for slot, request in enumerate(sorted({request for request, _, _ in rows}))}
    pad = PADDED - len(rows)
    context = SimpleNamespace(
        active_token_count=len(rows),
        request_ids=torch.tensor(sorted(slots)),
        token_to_request_idx=torch.tensor([slots[request] for request, _, _ in rows] + [0] * pad),
    )
    ids = torch.tensor([[token for _, _, token in rows] + [0] * pad])
    positions = torch.tensor([[position for _, position, _ in rows] + [0] * pad])
    logits = model(ids, positions, inference_context=context)
    return {request: int(logits[index].argmax()) for index, (request, _, _) in enumerate(rows)}



def run_on_engines(folder, served: dict[int, int], plant_engine: int | None = None) -> CaptureSet:
    """Two data-parallel engines of one rank each (rank = engine), each stepping the requests the coordinator
    gave it (``served``: request -> engine), prefill then two decode steps, captured as the ranks do (values on
    each engine's first rank). ``plant_engine``: that engine's mix moves every row (an engine-dependent module)."""
    for engine in (0, 1):
        model = ToyModel()
        if engine != plant_engine:
            model.mix.forward = lambda hidden, active: hidden
        spec = {"decode_steps": 10, "value_ranks": [], "value_engine_first": True}
        capture = capture_module.Capture(model, folder, engine, spec, {"index": engine, "ranks": [engine],
                                                                       "engines": 2})
        capture.install()
        group = [request for request, by in served.items() if by == engine]
        with torch.no_grad():
            if group:
                following = step(model, [(request, position, token) for request in group
                                         for position, token in enumerate(PROMPTS[request])])
                for decode in range(2):
                    following = step(model, [(request, len(PROMPTS[request]) + decode, following[request])
                                             for request in group])
        capture.close()
    return read_capture(folder)
