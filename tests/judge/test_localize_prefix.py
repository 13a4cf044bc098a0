"""Localization across schedules and engines: the capture names each real row by its request prefix, and
``localize --align prefixes`` compares rows of the same prefix wherever each run computed them, on whichever
data-parallel engine served them.

The toy model of support/toy_capture.py stands in for the GPTModel (the capture's hooks are the rank's own). Two
schedules feed the same two requests: together (both prompts in one step, then both decode) and alone (one request
after the other); two engines serve them as a coordinator would, each run choosing again.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from logitsmatch.errors import BadInput
from logitsmatch.judge.localize import localize, read_capture
from logitsmatch.judge.localize_prefix import localize_by_prefix
from support import require_toolchain_module

torch = require_toolchain_module("torch")
capture_module = require_toolchain_module("logitsmatch.rank.capture")
from support.toy_capture import PROMPTS, ToyModel, run_on_engines, step  # noqa: E402 (needs torch)


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


def test_runs_served_by_different_engines_are_named_and_compared_across_engines(tmp_path):
    """The coordinator gave each request to the other engine in the second run: step by step the refusal says
    exactly that (not "a batch schedule"), and by prefix each request's rows are compared between the engines
    that served it: all 9 rows of the two requests, none differing."""
    first = run_on_engines(tmp_path / "first", {7: 0, 8: 1})
    second = run_on_engines(tmp_path / "second", {7: 1, 8: 0})
    problem = localize(first, second).schedule_problem
    assert problem.startswith("the two runs were served by different data-parallel engines: request 7 by engine 0 "
                              "vs engine 1, request 8 by engine 1 vs engine 0 (the coordinator's choice")
    assert "batch schedule" not in problem
    result = localize_by_prefix(first, second)
    embedding = next(row for row in result.rows if row.name == "embedding")
    assert embedding.rows_note == "0 of 9 shared rows differ" and embedding.ranks_compared == 1
    assert result.first_bitwise is None and not result.missing


def test_a_module_that_moves_on_one_engine_is_found_across_engines(tmp_path):
    first = run_on_engines(tmp_path / "first", {7: 0, 8: 0})
    second = run_on_engines(tmp_path / "second", {7: 1, 8: 1}, plant_engine=1)
    moved = localize_by_prefix(first, second).first_bitwise
    assert moved.name == "mix"
    assert moved.rows_note.startswith("9 of 9 shared rows differ, first: request 7 position 0 (prefill vs prefill; "
                                      "engine 0 vs engine 1)")


def test_the_same_engine_on_both_sides_is_no_engine_difference(tmp_path):
    first = run_on_engines(tmp_path / "first", {7: 0, 8: 1})
    again = run_on_engines(tmp_path / "again", {7: 0, 8: 1}, plant_engine=0)
    assert localize(first, again).schedule_problem is None


def test_values_stay_on_each_engines_first_rank_within_the_runs_budget(tmp_path):
    spec = {"decode_steps": 1, "value_ranks": [], "value_engine_first": True, "value_budget_bytes": 1000}
    engine = {"index": 1, "ranks": [6, 4, 7, 5], "engines": 2}
    kept = [capture_module.Capture(ToyModel(), tmp_path, rank, spec, engine) for rank in (4, 5)]
    assert [capture.keep_values for capture in kept] == [True, False] and kept[0].budget == 500
    for capture in kept:
        capture.close()
    header = json.loads((tmp_path / "rank-4.jsonl").read_text().splitlines()[0])
    assert header["engine"] == 1 and header["engine_ranks"] == [4, 5, 6, 7]
    assert read_capture(tmp_path).ranks[5].role == "rank 1 of its engine"


def test_an_engine_that_does_not_hold_its_rank_is_bad_input(tmp_path):
    capture_module.Capture(ToyModel(), tmp_path, 3, {}, {"index": 0, "ranks": [0, 1], "engines": 1}).close()
    with pytest.raises(BadInput, match="engine_ranks the ints that include rank 3"):
        read_capture(tmp_path)


def test_a_capture_that_names_no_engine_pairs_rank_with_rank(tmp_path):
    """A capture made before the header named the engines, against one that names them: rank 0 with rank 0."""
    before = run(tmp_path / "before", "alone", plant=False)
    named = run_on_engines(tmp_path / "named", {7: 0, 8: 0})
    result = localize_by_prefix(before, named)
    assert result.rows and result.first_bitwise is None
    assert next(row for row in result.rows if row.name == "embedding").rows_note == "0 of 9 shared rows differ"
