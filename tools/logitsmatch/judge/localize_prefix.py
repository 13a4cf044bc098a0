"""Localization across schedules and engines: align two captures row by row by prefix.

Two runs of one suite under different schedules batch the same requests differently, and in a
data-parallel suite serve a request on whichever engine the coordinator picks, which varies from
run to run. So each real row is keyed by its prefix (the digest of its request's tokens up to and
including its own, which the capture records per step) and every module output is compared row by
row over the prefixes both runs computed, wherever each run computed them: ranks pair by their
place in their engine (values are kept on each engine's first rank; a capture that names no
engine pairs rank with rank), so a request's rows are compared between the engines that served it.
The first module in execution order with a shared prefix whose row differs bitwise is the first
to move.

Pure reading and numpy: no torch.
"""

from __future__ import annotations

import numpy as np

from logitsmatch.errors import BadInput
from logitsmatch.judge.localize import (
    DEFAULT_TOLERANCE,
    CaptureSet,
    Localization,
    ModuleRow,
    RankCapture,
    only_side,
    step_kind,
    stored_values,
    weights_differing_tensors,
)
from logitsmatch.judge.numerics import compare_arrays
from logitsmatch.judge.policy import Policy


def _prefixed_rows(capture: CaptureSet, ranks: list[int]) -> tuple[dict[tuple, dict[str, tuple]], dict[tuple, int]]:
    """Per module output (name, output, occurrence within its step): prefix -> (record, row, step, request,
    position, rank) over every step of ``ranks`` (one place in each engine) that names its rows, and each output's
    place in a step's execution order."""
    rows: dict[tuple, dict[str, tuple]] = {}
    places: dict[tuple, int] = {}
    for rank in ranks:
        _add_prefixed_rows(capture.ranks[rank], rows, places)
    return rows, places


def _add_prefixed_rows(capture: RankCapture, rows: dict, places: dict) -> None:
    steps = capture.steps
    seen: dict[tuple, int] = {}
    step_start: dict[int, int] = {}
    for record in capture.outputs:
        step = steps.get(record["step"]) or {}
        prefixes = step.get("row_prefixes")
        base = (record["step"], record["name"], record["output"])
        seen[base] = seen.get(base, -1) + 1
        key = (record["name"], record["output"], seen[base])
        place = record["order"] - step_start.setdefault(record["step"], record["order"])
        places[key] = min(places.get(key, place), place)
        dim = record.get("token_dim")
        if not prefixes or record.get("values") is None or not isinstance(dim, int) \
                or not 0 <= dim < len(record["valid_shape"]) or record["valid_shape"][dim] != len(prefixes):
            continue
        found = rows.setdefault(key, {})
        for row, prefix in enumerate(prefixes):
            if prefix is not None and prefix not in found:
                found[prefix] = (record, row, record["step"], step["row_requests"][row], step["row_positions"][row],
                                 capture.rank)


def _value_roles(capture: CaptureSet, by_engine: bool) -> dict[str, list[int]]:
    """The value ranks by their place in their engine (``RankCapture.role``), or by rank."""
    roles: dict[str, list[int]] = {}
    for rank in capture.value_ranks:
        roles.setdefault(capture.ranks[rank].role if by_engine else f"rank {rank}", []).append(rank)
    return roles


def localize_by_prefix(a: CaptureSet, b: CaptureSet, tolerance: Policy = DEFAULT_TOLERANCE) -> Localization:
    """Align two captures row by row over the prefixes both computed (any steps, any batch, any engine), on the
    value ranks in the same place of their engines on both sides (the same rank where a capture names no engine);
    one ModuleRow per module output, in execution order, saying how many shared rows differ."""
    by_engine = all(rank.engine is not None for capture in (a, b) for rank in capture.ranks.values())
    roles_a, roles_b = _value_roles(a, by_engine), _value_roles(b, by_engine)
    roles = [role for role in roles_a if role in roles_b]
    if not roles:
        raise BadInput("aligning by prefix needs values, and the two captures share no value rank")
    without = [f"{capture.folder}" for capture, by_role in ((a, roles_a), (b, roles_b))
               if not any(step.get("row_prefixes") for role in roles for rank in by_role[role]
                          for step in capture.ranks[rank].steps.values())]
    if without:
        raise BadInput(f"{without[0]}: its steps do not name their rows (a capture of format 1, or a release whose "
                       "context does not say which request a row is): it cannot be aligned by prefix")
    result = Localization([], tolerance, None, weights_differing_tensors(a, b))
    cache: dict[tuple, np.ndarray] = {}

    def row_values(capture: CaptureSet, entry: tuple) -> np.ndarray:
        record, row, rank = entry[0], entry[1], entry[5]
        key = (id(capture), rank, record["values"])
        if key not in cache:
            cache[key] = stored_values(capture, rank, record["values"])
        return np.take(cache[key], row, axis=record["token_dim"])

    modules: dict[tuple, ModuleRow] = {}
    for role in roles:
        (left, places), (right, _) = _prefixed_rows(a, roles_a[role]), _prefixed_rows(b, roles_b[role])
        result.missing += [f"{role}: {key[0]}#{key[1]} has rows named by prefix {only_side(key, left)}"
                           for key in sorted(set(left) ^ set(right))]
        for key in sorted(set(left) & set(right), key=lambda k: places[k]):
            shared = sorted(set(left[key]) & set(right[key]), key=lambda p: (left[key][p][2], left[key][p][1]))
            if not shared:
                continue
            pairs = [(row_values(a, left[key][p]), row_values(b, right[key][p])) for p in shared]
            shapes = {(x.shape, y.shape) for x, y in pairs if x.shape != y.shape}
            if shapes:
                mismatch = "row shape {} vs {}".format(*next(iter(shapes)))
                modules.setdefault(key, ModuleRow(left[key][shared[0]][2], places[key], key[0], key[1], [], 0, 0,
                                                  None, None, mismatch))
                continue
            moved = [p for p, (x, y) in zip(shared, pairs) if x.tobytes() != y.tobytes()]
            judged = compare_arrays(np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs]), tolerance)
            first = left[key][moved[0] if moved else shared[0]]
            other = right[key][moved[0] if moved else shared[0]]
            engines = (a.ranks[first[5]].engine, b.ranks[other[5]].engine)
            where = f"; engine {engines[0]} vs engine {engines[1]}" if engines[0] != engines[1] else ""
            note = (f"{len(moved)} of {len(shared)} shared rows differ" + (
                f", first: request {first[3]} position {first[4]} ({step_kind(first[2])} vs {step_kind(other[2])}"
                f"{where})" if moved else ""))
            row = modules.get(key)
            if row is None:
                row = modules[key] = ModuleRow(first[2], places[key], key[0], key[1], list(pairs[0][0].shape), 0, 0,
                                               None, None, rows_note=note)
            row.ranks_compared += 1
            row.ranks_differing += bool(moved)
            row.max_abs_delta = max(row.max_abs_delta or 0.0, judged["max_abs_delta"])
            row.beyond_tolerance = bool(row.beyond_tolerance) or judged["n_over"] > 0
            if moved and role == roles[0]:
                row.step, row.rows_note = first[2], note
    result.rows = sorted(modules.values(), key=lambda row: row.order)
    return result
