"""Localization across schedules: the capture names each real row by its request prefix, and
``localize --align prefixes`` compares rows of the same prefix wherever each run computed them.

A toy model stands in for the GPTModel (the capture's hooks are the rank's own): an embedding
that sees one row at a time, then a module whose output depends on how many rows share the step
(the planted batch dependence), then a row-wise head. Two schedules feed the same two requests:
together (both prompts in one step, then both decode) and alone (one request after the other).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from logitsmatch.errors import BadInput
from logitsmatch.judge.localize import localize, localize_by_prefix, read_capture
from support import require_toolchain_module

torch = require_toolchain_module("torch")
capture_module = require_toolchain_module("logitsmatch.rank.capture")

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


def run(folder, schedule: str, plant: bool = True):
    """Two prefill+decode rounds of the two requests, together or alone, captured as a rank does."""
    model = ToyModel()
    if not plant:
        model.mix.forward = lambda hidden, active: hidden
    capture = capture_module.Capture(model, folder, 0, {"decode_steps": 10}).install()
    groups = [list(PROMPTS)] if schedule == "together" else [[request] for request in PROMPTS]
    with torch.no_grad():
        for group in groups:
            prefill = [(request, position, token) for request in group
                       for position, token in enumerate(PROMPTS[request])]
            following = step(model, prefill)
            for decode in range(2):
                following = step(model, [(request, len(PROMPTS[request]) + decode, following[request])
                                         for request in group])
    capture.close()
    return read_capture(folder)


def test_the_capture_names_each_row_by_its_request_prefix(tmp_path):
    run(tmp_path / "together", "together")
    steps = [json.loads(line) for line in (tmp_path / "together" / "rank-0.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    prefill = steps[0]
    assert prefill["row_requests"] == [7, 7, 7, 8, 8] and prefill["row_positions"] == [0, 1, 2, 0, 1]
    assert len(set(prefill["row_prefixes"])) == 5 and steps[1]["row_positions"] == [3, 2]
    alone = run(tmp_path / "alone", "alone")
    alone_prefill = alone.ranks[0].steps[0]
    assert alone_prefill["row_prefixes"] == prefill["row_prefixes"][:3]  # the same tokens, the same prefix


def test_a_batch_dependent_module_is_the_first_to_move_between_schedules(tmp_path):
    together, alone = run(tmp_path / "together", "together"), run(tmp_path / "alone", "alone")
    assert localize(together, alone).schedule_problem  # step by step, the two cannot be aligned
    result = localize_by_prefix(together, alone)
    names = [row.name for row in result.rows]
    assert names.index("embedding") < names.index("mix") < names.index("head")
    embedding = next(row for row in result.rows if row.name == "embedding")
    assert not embedding.differs and embedding.rows_note.startswith("0 of ")
    first = result.first_bitwise
    assert first.name == "mix" and 0 < first.max_abs_delta < 1e-2
    assert "shared rows differ, first: request 7 position 0 (prefill vs prefill)" in first.rows_note
    assert "first moving module mix" in result.summary()


def test_without_the_plant_the_schedules_agree_row_by_row(tmp_path):
    together, alone = run(tmp_path / "together", "together", False), run(tmp_path / "alone", "alone", False)
    result = localize_by_prefix(together, alone)
    assert result.rows and result.first_bitwise is None
    assert all(row.rows_note.split(" of ")[0] == "0" for row in result.rows)


def test_a_capture_without_row_names_cannot_be_aligned_by_prefix(tmp_path):
    together = run(tmp_path / "together", "together")
    old = tmp_path / "old"
    old.mkdir()
    lines = []
    for line in (tmp_path / "together" / "rank-0.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name in ("row_requests", "row_positions", "row_prefixes"):
            record.pop(name, None)
        lines.append(json.dumps(record))
    (old / "rank-0.jsonl").write_text("\n".join(lines) + "\n")
    (old / "rank-0.npz").write_bytes((tmp_path / "together" / "rank-0.npz").read_bytes())
    with pytest.raises(BadInput, match="do not name their rows"):
        localize_by_prefix(together, read_capture(old))


def test_row_names_that_do_not_match_the_step_are_bad_input(tmp_path):
    run(tmp_path / "together", "together")
    path = tmp_path / "together" / "rank-0.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["row_prefixes"] = records[1]["row_prefixes"][:-1]
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    with pytest.raises(BadInput, match="one entry per active token"):
        read_capture(tmp_path / "together")


def test_values_are_compared_as_rows_of_the_token_dimension(tmp_path):
    together = run(tmp_path / "together", "together", False)
    outputs = {record["name"]: record for record in together.ranks[0].outputs if record["step"] == 0}
    assert outputs["embedding"]["token_dim"] == 0 and outputs["head"]["valid_shape"] == [5, 16]
    assert np.asarray(together.ranks[0].values[outputs["head"]["values"]]).shape == (5, 16)


def test_a_step_whose_slots_are_not_request_rows_is_not_named(tmp_path):
    """An idle engine's dummy step leaves the context's bookkeeping as it was (uninitialized slots): no names."""
    capture = capture_module.Capture(ToyModel(), tmp_path / "c", 0, {})
    capture.active = 2
    context = SimpleNamespace(request_ids=torch.tensor([7]), token_to_request_idx=torch.tensor([0, 93_000_000, 0]))
    ids, positions = torch.tensor([[1, 2, 0]]), torch.tensor([[0, 1, 0]])
    assert capture._row_prefixes(context, ids, positions) == {}
    context.token_to_request_idx = torch.tensor([0, 0, 5])  # padding rows beyond the active ones are not read
    assert capture._row_prefixes(context, ids, positions)["row_positions"] == [0, 1]
    capture.close()
