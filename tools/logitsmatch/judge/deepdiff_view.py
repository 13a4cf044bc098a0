"""A comparison in deepdiff's own vocabulary: what ``DeepDiff(golden, current, ...).to_json()`` says.

The DeepDiff call this reproduces (``deepdiff_options``)::

    DeepDiff(golden, current, math_epsilon=policy.abs_tol, zip_ordered_iterables=True,
             threshold_to_diff_deeper=0, ignore_nan_inequality=policy.nan_equal,
             ignore_order_func=routing_expert_set, exclude_regex_paths=[latency, throughput unless selected])

* ``math_epsilon`` is ``math.isclose(a, b, abs_tol=...)`` with its default rel_tol of 1e-9:
  exactly Megatron's rule and the ``megatron`` policy, boundary included. (In
  ``deterministic`` mode the call has no math_epsilon: plain ``!=``.)
* ``zip_ordered_iterables`` compares lists index by index, as Megatron does; without it
  deepdiff aligns lists with difflib, and a changed value can come out as an
  ``iterable_item_removed`` + ``iterable_item_added`` pair, or as a shift.
* ``threshold_to_diff_deeper=0`` always names the changed keys, never a whole request.
* ``ignore_order_func=routing_expert_set``: the experts of one (token, layer),
  ``routing_indices[t][l]``, are a set, as compare judges them (megatron-core may list the
  top-k in any order); every other list keeps its order.
* ``exclude_regex_paths``: timing is not an output. Each request's ``latency`` is left out,
  and the run-level ``throughput`` unless the policy's metrics select it.

deepdiff itself diffs everything except the long ``logprobs`` lists (tokens, text,
latency, structure: small); the logprob entries are filled from the numpy comparison:
``values_changed`` for every comparable index out of tolerance, ``iterable_item_added`` /
``iterable_item_removed`` past the shorter list. Positions that are not comparable
(from a request's first token divergence on) are never value changes: they are listed
under ``logitsmatch_not_comparable`` with both values. Values that moved but stay within the tolerance
(math_epsilon hides them from DeepDiff) are listed under ``logitsmatch_moved_within_tolerance``, so a pass
that moved logprobs is never an empty diff.
"""

from __future__ import annotations

import json
import math
from typing import Any

from logitsmatch.judge.policy import Mode
from logitsmatch.judge.results import ComparisonResult, deepdiff_path

NOT_COMPARABLE = "logitsmatch_not_comparable"
MOVED_WITHIN_TOLERANCE = "logitsmatch_moved_within_tolerance"


_REQUEST_KEY = r"""root\[(?:'[^']*'|"[^"]*")\]"""
REQUEST_TIMING_PATH = rf"^{_REQUEST_KEY}\['latency'\]$"
RUN_TIMING_PATH = r"^root\['throughput'\]$"


def routing_expert_set(level) -> bool:
    """DeepDiff's ignore_order_func: True for the expert list of one (token, layer), [rid, routing_indices, t, l]."""
    path = level.path(output_format="list")
    return len(path) == 4 and path[1] == "routing_indices"


def deepdiff_options(result: ComparisonResult) -> dict:
    """The DeepDiff keyword arguments whose output ``deepdiff_changes`` reproduces."""
    timing = [REQUEST_TIMING_PATH] + ([] if "throughput" in result.policy.metrics else [RUN_TIMING_PATH])
    options = {"zip_ordered_iterables": True, "threshold_to_diff_deeper": 0,
               "ignore_nan_inequality": result.policy.nan_equal, "ignore_order_func": routing_expert_set,
               "exclude_regex_paths": timing}
    if result.policy.mode is not Mode.DETERMINISTIC:
        options["math_epsilon"] = result.policy.abs_tol
    return options


def _without_logprobs(golden: dict, current: dict) -> tuple[dict, dict]:
    """Both documents, minus the logprobs lists of the requests that have one on both sides."""
    paired = {rid for rid in golden.keys() & current.keys()
              if isinstance(golden[rid], dict) and isinstance(current[rid], dict)
              and isinstance(golden[rid].get("logprobs"), list) and isinstance(current[rid].get("logprobs"), list)}

    def strip(doc: dict) -> dict:
        return {rid: ({k: v for k, v in value.items() if k != "logprobs"} if rid in paired else value)
                for rid, value in doc.items()}

    return strip(golden), strip(current)


def deepdiff_changes(golden: dict, current: dict, result: ComparisonResult) -> dict:
    """The changes of ``result`` (a ``compare(golden, current)``) in DeepDiff's text-view JSON shape."""
    from deepdiff import DeepDiff

    stripped_golden, stripped_current = _without_logprobs(golden, current)
    diff = DeepDiff(stripped_golden, stripped_current, **deepdiff_options(result))
    try:
        text = diff.to_json()
    except TypeError:  # orjson refuses a lone surrogate in a string; the stdlib writes it escaped
        text = diff.to_json(force_use_builtin_json=True)
    changes: dict[str, Any] = json.loads(text)
    values_changed = changes.setdefault("values_changed", {})
    added = changes.setdefault("iterable_item_added", {})
    removed = changes.setdefault("iterable_item_removed", {})
    not_comparable: dict[str, dict] = {}
    within: dict[str, dict] = {}
    drift, moves = result.drift, result.moves
    for rid in result.request_order:
        g_values, c_values = golden[rid].get("logprobs"), current[rid].get("logprobs")
        if not (isinstance(g_values, list) and isinstance(c_values, list)):
            continue  # a missing list is deepdiff's own dictionary_item_added / removed
        prefix = deepdiff_path(rid, "logprobs")
        request = result.requests[rid]
        rows = request.changes
        for index in drift.index[rows].tolist():
            values_changed[f"{prefix}[{index}]"] = {"new_value": c_values[index], "old_value": g_values[index]}
        for index in moves.index[request.moves].tolist():
            within[f"{prefix}[{index}]"] = {"new_value": c_values[index], "old_value": g_values[index]}
        common = min(len(g_values), len(c_values))
        for index in range(request.n_compared, common):
            old, new = g_values[index], c_values[index]
            if not _same(old, new, result):
                not_comparable[f"{prefix}[{index}]"] = {"new_value": new, "old_value": old}
        for index in range(common, len(g_values)):
            removed[f"{prefix}[{index}]"] = g_values[index]
        for index in range(common, len(c_values)):
            added[f"{prefix}[{index}]"] = c_values[index]
    for key in ("values_changed", "iterable_item_added", "iterable_item_removed"):
        if not changes[key]:
            del changes[key]
    if not_comparable:
        changes[NOT_COMPARABLE] = not_comparable
    if within:
        changes[MOVED_WITHIN_TOLERANCE] = within
    return changes


def _same(old: float, new: float, result: ComparisonResult) -> bool:
    """Whether deepdiff would call two numbers equal under ``deepdiff_options``."""
    if (
        result.policy.nan_equal
        and isinstance(old, float)
        and isinstance(new, float)
        and math.isnan(old)
        and math.isnan(new)
    ):
        return True
    if result.policy.mode is Mode.DETERMINISTIC:
        return old == new
    return math.isclose(old, new, abs_tol=result.policy.abs_tol)


def dumps(changes: dict) -> bytes:
    """JSON exactly as ``DeepDiff.to_json()`` writes it: deepdiff's own serializer (orjson when installed,
    which writes NaN and infinities as null; lone surrogates escaped)."""
    from deepdiff.serialization import json_dumps

    try:
        return json_dumps(changes, return_bytes=True)
    except TypeError:  # orjson refuses lone surrogates; the stdlib writes them escaped
        return json_dumps(changes, force_use_builtin_json=True, return_bytes=True)


def write_deepdiff(golden: dict, current: dict, result: ComparisonResult, path) -> None:
    """Write ``deepdiff_changes`` to ``path`` atomically."""
    from logitsmatch.files import atomic_writer

    with atomic_writer(path) as out:
        out.write(dumps(deepdiff_changes(golden, current, result)))
        out.write(b"\n")
