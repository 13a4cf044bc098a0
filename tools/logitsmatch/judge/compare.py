"""Compare two golden-format documents: Megatron's verdict, and where and how far they drift.

By default the verdict is the one Megatron-LM's inference comparator reaches
(tests/functional_tests/python_test_utils/test_inference_regular_pipeline.py,
run itself by tests/judge/test_megatron_parity.py): every top-level key but the
run-level ones (throughput, memory, ...) is a request id; every golden request
must be in the current file and the current file may hold no other; tokens
exact, logprobs ``math.isclose(abs_tol=1e-3)`` index by index, same length,
generated_text a prefix, only the suite's METRICS checked. The deliberate
differences are listed in docs/guides/comparing.md ("Comparing files").

On top of the verdict the result says where the two runs part: the first
diverging generated token per request, and every logprob out of tolerance
before it. Logprobs from that token on were computed for a different token or
context, so they are "not comparable" rather than drift.

Numerics are decided vectorised with numpy over all requests at once
(numerics.py); the checks are checks.py's; what counts as a match is logitsmatch.policy's
and the result is results.py's. deepdiff diffs a skeleton of both documents
(lists replaced by their lengths), only when their shapes differ, so its cost
does not grow with the number of logprobs.
"""

from __future__ import annotations

from typing import Any

from logitsmatch.errors import BadInput
from logitsmatch.judge.checks import request_checks, request_set_checks, run_checks
from logitsmatch.judge.golden_io import GoldenDocument, request_ids, request_sort_key, validate_golden
from logitsmatch.judge.numerics import Numerics, gather_pair
from logitsmatch.judge.policy import KNOWN_METRICS, REQUEST_METRICS, RUN_METRICS, Policy
from logitsmatch.judge.results import Check, ComparisonResult

# --- structure -------------------------------------------------------------------------

_SKELETON_DEPTH = 8
_SCALAR_SHAPES = {float: "number", int: "number", str: "string", bool: "bool", type(None): "null"}


def _skeleton(value: Any, depth: int = 0) -> Any:
    """Shape of a value: objects kept, lists replaced by their length, scalars by their type."""
    kind = type(value)
    if kind is list:
        return f"list[{len(value)}]"
    if kind is dict:
        if depth >= _SKELETON_DEPTH:
            return "object"
        return {k: _skeleton(v, depth + 1) for k, v in value.items()}
    return _SCALAR_SHAPES.get(kind, "string")


def _describe(skeleton: Any) -> str | None:
    return "object" if isinstance(skeleton, dict) else skeleton


def _structural_changes(golden: dict, current: dict, failed_checks: list[Check]) -> list[dict]:
    """deepdiff over the skeletons of the top-level entries whose shape differs.

    `fails` marks a change that a failing check covers: the same request and
    field, or, for a missing or extra request, the request-id check.
    """
    golden_shape = {k: _skeleton(v) for k, v in golden.items()}
    current_shape = {k: _skeleton(v) for k, v in current.items()}
    missing = object()
    differing = [
        k for k in dict.fromkeys([*golden_shape, *current_shape])
        if golden_shape.get(k, missing) != current_shape.get(k, missing)
    ]
    if not differing:
        return []
    from deepdiff import DeepDiff  # imported only when shapes differ: most comparisons never need it

    diff = DeepDiff(
        {k: golden_shape[k] for k in differing if k in golden_shape},
        {k: current_shape[k] for k in differing if k in current_shape},
        view="tree",
        threshold_to_diff_deeper=0,  # always report the keys that differ, never a whole object
    )
    failing = {(c.request, c.metric) for c in failed_checks}
    changes = []
    for report_type, levels in diff.items():
        for level in levels:
            path = level.path(output_format="list")
            key = path[0]
            is_request = isinstance(golden.get(key, current.get(key)), dict)
            golden_side = None if report_type == "dictionary_item_added" else _describe(level.t1)
            current_side = None if report_type == "dictionary_item_removed" else _describe(level.t2)
            if report_type == "dictionary_item_removed":
                kind = "missing_request" if len(path) == 1 and is_request else "missing_field"
            elif report_type == "dictionary_item_added":
                kind = "extra_request" if len(path) == 1 and is_request else "extra_field"
            elif str(golden_side).startswith("list[") and str(current_side).startswith("list["):
                kind = "length_change"
            else:
                kind = "type_change"
            request = key if is_request else None
            name = path[1] if is_request and len(path) > 1 else (None if is_request else key)
            if kind in ("extra_request", "missing_request"):
                fails = (None, "request_ids") in failing
            else:
                fails = (request, name) in failing
            changes.append({
                "kind": kind,
                "path": level.path(),
                "request": request,
                "field": name,
                "golden": golden_side,
                "current": current_side,
                "fails": fails,
            })
    changes.sort(key=lambda c: (request_sort_key(c["request"] or ""), c["path"]))
    return changes


def _metrics_in(doc: dict) -> set[str]:
    """The metrics a document holds: a request field any request has, a run-level key at the top."""
    fields = {field for rid in request_ids(doc) for field in doc[rid]}
    return {m for m in REQUEST_METRICS if m in fields} | {m for m in RUN_METRICS if m in doc}


def check_something_to_check(golden: dict, current: dict, policy: Policy) -> list[str]:
    """BadInput when the policy selects nothing either file holds (a pass would check nothing); else the
    warnings naming each metric both files hold that is not selected."""
    in_golden, in_current = _metrics_in(golden), _metrics_in(current)
    if not policy.metrics:
        raise BadInput(f"nothing to check: no metrics selected (known: {', '.join(KNOWN_METRICS)})")
    if not set(policy.metrics) & (in_golden | in_current):
        held = ", ".join(m for m in KNOWN_METRICS if m in in_golden | in_current) or "none of them"
        raise BadInput(f"nothing to check: none of the metrics {', '.join(policy.metrics)} is in either file "
                       f"(they hold {held})")
    return [f"{m} in both files, not checked (not among the metrics {', '.join(policy.metrics)})"
            for m in KNOWN_METRICS if m in in_golden & in_current and m not in policy.metrics]


def compare(golden: dict, current: dict, policy: Policy = Policy(), dtype: str | None = None) -> ComparisonResult:
    """Compare two golden-format documents; pure, no I/O.

    ``dtype``: the runs' dtype when known (verdict.run_dtype, from the provenance sidecars), the width the
    ulps are counted in; None counts them in float32 when every value is one, else float64.

    Documents from golden_io.load_golden are used as they are; any other dict
    is validated first (BadInput names "golden" or "current" and the problem).
    Nothing to check (no metric selected, or none in either file) is BadInput too.
    """
    if not isinstance(golden, GoldenDocument):
        golden = validate_golden(golden, "golden")
    if not isinstance(current, GoldenDocument):
        current = validate_golden(current, "current")
    not_checked = check_something_to_check(golden, current, policy)
    golden_ids, current_ids = set(request_ids(golden)), set(request_ids(current))
    order = sorted(golden_ids & current_ids, key=request_sort_key)
    checks, warnings = request_set_checks(golden, golden_ids, current_ids, order, policy)
    warnings += not_checked

    pairs = [gather_pair(rid, golden[rid], current[rid]) for rid in order]
    numerics = Numerics(pairs, policy, dtype)

    requests = {}
    for position, pair in enumerate(pairs):
        pair_checks = request_checks(pair, numerics, position, policy)
        checks.extend(pair_checks)
        requests[pair.rid] = numerics.request_result(pair, position, all(c.status != "fail" for c in pair_checks))
    checks.extend(run_checks(golden, current, policy))

    return ComparisonResult(
        policy=policy,
        checks=checks,
        structural_changes=_structural_changes(golden, current, [c for c in checks if c.status == "fail"]),
        warnings=warnings,
        request_order=order,
        requests=requests,
        drift=numerics.drift,
        moves=numerics.moves,
        n_compared=int(numerics.counts.sum()),
        n_not_comparable=sum(numerics.not_comparable(p) for p in pairs),
        n_moved=int(numerics.n_moved.sum()),
        max_ulps=int(numerics.max_ulps.max(initial=0)),
        ulp_width=numerics.ulp_width,
        **numerics.overall_stats(),
    )
