"""Compare two golden-format documents: Megatron's verdict, and where and how far they drift.

By default the verdict is the one Megatron-LM's inference comparator reaches
(tests/functional_tests/python_test_utils/test_inference_regular_pipeline.py,
run itself by tests/test_megatron_parity.py): every top-level key but the
run-level ones (throughput, memory, ...) is a request id; every golden request
must be in the current file and the current file may hold no other; tokens
exact, logprobs ``math.isclose(abs_tol=1e-3)`` index by index, same length,
generated_text a prefix, only the suite's METRICS checked. The deliberate
differences are listed in the README ("Comparing files").

On top of the verdict the result says where the two runs part: the first
diverging generated token per request, and every logprob out of tolerance
before it. Logprobs from that token on were computed for a different token or
context, so they are "not comparable" rather than drift.

Numerics are decided vectorised with numpy over all requests at once; deepdiff
diffs a skeleton of both documents (lists replaced by their lengths), only when
their shapes differ, so its cost does not grow with the number of logprobs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitsmatch.errors import BadInput
from logitsmatch.judge.divergence import text_at
from logitsmatch.judge.golden_io import GoldenDocument, json_type, request_ids, validate_golden
from logitsmatch.judge.ulps import moved, ulp_distance, ulp_width

REQUEST_METRICS = ("generated_tokens", "logprobs", "generated_text", "routing_indices")
RUN_METRICS = ("throughput", "mem-max-allocated-bytes")
KNOWN_METRICS = REQUEST_METRICS + RUN_METRICS
DEFAULT_METRICS = ("generated_tokens", "logprobs")

def _deepdiff_key(key: str) -> str:
    """A dict key as deepdiff quotes it (deepdiff.path.stringify_element for dict keys)."""
    return f'"{key}"' if "'" in key else f"'{key}'"


def deepdiff_path(*elements: str | int) -> str:
    """The path deepdiff prints for a place in a golden document: ``root['17']['logprobs'][51]``."""
    return "root" + "".join(f"[{e}]" if isinstance(e, int) else f"[{_deepdiff_key(e)}]" for e in elements)


# Megatron's training comparator allows min(max(N // 100, 1), 50) failing values of N.
AUTO_BUDGET_RULE = "min(max(n_compared // 100, 1), 50) per request"


class Mode(enum.Enum):
    """How logprobs are judged; tokens are always compared exactly."""

    MEGATRON = "megatron"  # math.isclose(abs_tol=1e-3), Megatron's inference rule
    DETERMINISTIC = "deterministic"  # bit-exact float64
    APPROXIMATE = "approximate"  # abs/rel tolerance with a failure budget

    @classmethod
    def parse(cls, value: Mode | str) -> Mode:
        if isinstance(value, Mode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise BadInput(f"unknown comparison mode {value!r} (choose {choices})") from None


# rel_tol 1e-9 is math.isclose's default, which Megatron's call leaves in place.
_MODE_DEFAULTS = {
    Mode.MEGATRON: {"abs_tol": 1e-3, "rel_tol": 1e-9, "failure_budget": 0},
    Mode.DETERMINISTIC: {"abs_tol": 0.0, "rel_tol": 0.0, "failure_budget": 0},
    Mode.APPROXIMATE: {"abs_tol": 1e-5, "rel_tol": 1e-5, "failure_budget": None},
}
_COMPARISON_KEYS = ("mode", "abs_tol", "rel_tol", "failure_budget", "nan_equal", "request_subset")


def _tolerance(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadInput(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _budget(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"failure_budget must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Policy:
    """What counts as a match. Unset tolerances and budget take the mode's defaults.

    Fields accept the text forms a CLI or YAML gives ("approximate", "1e-4") and
    hold resolved values afterwards; anything invalid raises BadInput.

    failure_budget is the number of out-of-tolerance logprobs allowed per
    request; None (APPROXIMATE's default) applies Megatron's training rule,
    min(max(n // 100, 1), 50) of the n compared values.

    request_subset (off by default, unlike Megatron's verdict) judges only the
    golden requests the current file has: the others are a warning, not a failure.
    """

    mode: Mode = Mode.MEGATRON
    abs_tol: float | None = None
    rel_tol: float | None = None
    failure_budget: int | None = None
    nan_equal: bool = True
    metrics: tuple[str, ...] = DEFAULT_METRICS
    request_subset: bool = False

    def __post_init__(self) -> None:
        mode = Mode.parse(self.mode)
        defaults = _MODE_DEFAULTS[mode]
        abs_tol = defaults["abs_tol"] if self.abs_tol is None else _tolerance("abs_tol", self.abs_tol)
        rel_tol = defaults["rel_tol"] if self.rel_tol is None else _tolerance("rel_tol", self.rel_tol)
        budget = defaults["failure_budget"] if self.failure_budget is None else _budget(self.failure_budget)
        if mode is Mode.DETERMINISTIC and (abs_tol or rel_tol or budget):
            raise BadInput("deterministic mode is bit-exact: abs_tol, rel_tol and failure_budget must be 0")
        if not isinstance(self.nan_equal, bool):
            raise BadInput(f"nan_equal must be true or false, got {self.nan_equal!r}")
        if not isinstance(self.request_subset, bool):
            raise BadInput(f"request_subset must be true or false, got {self.request_subset!r}")
        if isinstance(self.metrics, str) or not isinstance(self.metrics, Iterable):
            raise BadInput(f"metrics must be a list of names, got {self.metrics!r}")
        metrics = tuple(self.metrics)
        if not all(isinstance(m, str) for m in metrics):
            raise BadInput(f"metrics must be a list of names, got {list(metrics)!r}")
        metrics = tuple(dict.fromkeys(metrics))
        unknown = [m for m in metrics if m not in KNOWN_METRICS]
        if unknown:
            raise BadInput(f"unknown metric(s) {', '.join(map(str, unknown))} (known: {', '.join(KNOWN_METRICS)})")
        for name, value in (("mode", mode), ("abs_tol", abs_tol), ("rel_tol", rel_tol),
                            ("failure_budget", budget), ("metrics", metrics)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_suite(cls, metrics: list[str] | None, comparison: dict | None = None) -> Policy:
        """Policy of a suite: its METRICS list and optional COMPARISON block of model_config.yaml."""
        comparison = {} if comparison is None else comparison
        if not isinstance(comparison, dict):
            raise BadInput(f"COMPARISON must be a mapping, got {json_type(comparison)}")
        unknown = sorted(set(comparison) - set(_COMPARISON_KEYS))
        if unknown:
            raise BadInput(f"COMPARISON: unknown key(s) {', '.join(map(str, unknown))} "
                           f"(known: {', '.join(_COMPARISON_KEYS)})")
        return cls(metrics=() if metrics is None else metrics, **comparison)

    def allowed_failures(self, n_compared: int) -> int:
        if self.failure_budget is not None:
            return self.failure_budget
        return min(max(n_compared // 100, 1), 50) if n_compared > 1 else 0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "abs_tol": self.abs_tol,
            "rel_tol": self.rel_tol,
            "failure_budget": self.failure_budget,
            "failure_budget_rule": AUTO_BUDGET_RULE if self.failure_budget is None else "fixed, per request",
            "nan_equal": self.nan_equal,
            "request_subset": self.request_subset,
            "metrics": list(self.metrics),
        }


@dataclass(frozen=True)
class Check:
    """One metric of one request (or of the run when request is None): a JUnit testcase."""

    request: str | None
    metric: str
    status: str  # "pass", "fail" or "skip"
    message: str = ""

    def to_dict(self) -> dict:
        return {"request": self.request, "metric": self.metric, "status": self.status, "message": self.message}


@dataclass
class RequestResult:
    """Per-request findings; its out-of-tolerance logprobs are rows `changes` of the drift table."""

    request_id: str
    passed: bool
    first_divergence: int | None
    token_changes: list[dict]
    text_change: dict | None
    prompt_logprobs: int | None  # entries in the prompt part (prompt length - 1)
    n_compared: int
    n_over: int
    n_moved: int  # compared values that differ bitwise, within tolerance or not
    max_ulps: int
    n_not_comparable: int
    allowed_failures: int
    max_abs_delta: float
    mean_abs_delta: float
    p99_abs_delta: float
    changes: slice
    prompt_change: dict | None = None  # {"golden_tokens", "current_tokens", ...} when the prompts differ
    divergence_text: dict | None = None  # from generated_text; judge.divergence.annotate decodes tokens else

    def stats(self) -> dict:
        return {
            "prompt_logprobs": self.prompt_logprobs,
            "compared": self.n_compared,
            "over_tolerance": self.n_over,
            "moved": self.n_moved,
            "max_ulps": self.max_ulps,
            "not_comparable": self.n_not_comparable,
            "allowed_failures": self.allowed_failures,
            "max_abs_delta": _json_float(self.max_abs_delta),
            "mean_abs_delta": _json_float(self.mean_abs_delta),
            "p99_abs_delta": _json_float(self.p99_abs_delta),
        }


@dataclass
class DriftTable:
    """Every comparable logprob out of tolerance, as columns (a million rows stay cheap)."""

    request: np.ndarray  # position of the request in ComparisonResult.request_order
    index: np.ndarray  # index into the request's logprobs list
    generated: np.ndarray  # False: prompt part, True: generated part
    golden: np.ndarray
    current: np.ndarray
    ulps: np.ndarray  # distance in units in the last place (ComparisonResult.ulp_width)

    def __len__(self) -> int:
        return len(self.index)

    def delta(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """current - golden of the chosen rows."""
        with np.errstate(invalid="ignore"):
            return self.current[rows] - self.golden[rows]

    def rows(self, rows: slice | np.ndarray, path_prefix: str) -> list[dict]:
        """Report entries {path, index, part, golden, current, delta} of one request (``path_prefix``
        is deepdiff's path of its logprobs list); non-finite values as strings."""
        golden, current, delta = (_json_floats(a) for a in (self.golden[rows], self.current[rows], self.delta(rows)))
        parts = np.where(self.generated[rows], "generated", "prompt").tolist()
        return [
            {"path": f"{path_prefix}[{i}]", "index": i, "part": p, "golden": g, "current": c, "delta": d, "ulps": u}
            for i, p, g, c, d, u in zip(self.index[rows].tolist(), parts, golden, current, delta, self.ulps[rows].tolist())
        ]

    def largest(self, limit: int) -> np.ndarray:
        """Row numbers of the `limit` largest |delta| (NaN mismatches first), largest first."""
        magnitude = np.nan_to_num(np.abs(self.delta()), nan=np.inf)
        if limit <= 0:
            return np.zeros(0, dtype=np.int64)
        if len(magnitude) > limit:
            top = np.argpartition(-magnitude, limit - 1)[:limit]
        else:
            top = np.arange(len(magnitude))
        return top[np.argsort(-magnitude[top], kind="stable")]


def _json_float(value: float) -> float | str:
    """JSON has no NaN or infinity: the report spells them "nan", "inf", "-inf"."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _json_floats(values: np.ndarray) -> list:
    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = _json_float(out[i])
    return out


@dataclass
class ComparisonResult:
    """Verdict, checks and drift of one golden/current pair; `to_dict()` is the JSON report."""

    policy: Policy
    checks: list[Check]
    structural_changes: list[dict]
    warnings: list[str]
    request_order: list[str]
    requests: dict[str, RequestResult]
    drift: DriftTable
    n_compared: int
    n_not_comparable: int
    n_moved: int
    max_ulps: int
    ulp_width: str  # "float32" or "float64": the width the ulps are counted in
    max_abs_delta: float
    mean_abs_delta: float
    p99_abs_delta: float
    failed_checks: list[Check] = field(init=False)

    def __post_init__(self) -> None:
        self.failed_checks = [c for c in self.checks if c.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed_checks

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def tokens_agree(self) -> bool:
        return all(r.first_divergence is None and r.prompt_change is None for r in self.requests.values())

    @property
    def first_divergences(self) -> dict[str, int | None]:
        return {rid: r.first_divergence for rid, r in self.requests.items()}

    @property
    def n_over_tolerance(self) -> int:
        return len(self.drift)

    def summary(self) -> dict:
        diverged = [r for r in self.requests.values() if r.first_divergence is not None]
        return {
            "requests_compared": len(self.requests),
            "checks": len(self.checks),
            "checks_failed": len(self.failed_checks),
            "tokens_agree": self.tokens_agree,
            "requests_with_token_divergence": len(diverged),
            "requests_with_prompt_change": sum(r.prompt_change is not None for r in self.requests.values()),
            "token_changes": sum(len(r.token_changes) for r in self.requests.values()),
            "structural_changes": len(self.structural_changes),
            "logprobs": {
                "compared": self.n_compared,
                "over_tolerance": self.n_over_tolerance,
                "moved": self.n_moved,
                "max_ulps": self.max_ulps,
                "ulp_width": self.ulp_width,
                "not_comparable": self.n_not_comparable,
                "max_abs_delta": _json_float(self.max_abs_delta),
                "mean_abs_delta": _json_float(self.mean_abs_delta),
                "p99_abs_delta": _json_float(self.p99_abs_delta),
            },
        }

    def request_entry(self, rid: str) -> dict:
        r = self.requests[rid]
        tokens = deepdiff_path(rid, "generated_tokens")
        text = None if r.text_change is None else {"path": deepdiff_path(rid, "generated_text"), **r.text_change}
        return {
            "passed": r.passed,
            "first_token_divergence": r.first_divergence,
            "first_divergence": None if r.first_divergence is None else {
                "index": r.first_divergence, "path": deepdiff_path(rid, "generated_tokens", r.first_divergence),
                "text": r.divergence_text},
            "prompt_change": r.prompt_change,
            "token_changes": [{"path": f"{tokens}[{c['index']}]", **c} for c in r.token_changes],
            "logprob_changes": self.drift.rows(r.changes, deepdiff_path(rid, "logprobs")),
            "generated_text": text,
            "stats": r.stats(),
        }

    def header_dict(self) -> dict:
        """The report without its per-request entries (written first when streaming)."""
        return {
            "schema_version": 2,
            "verdict": self.verdict,
            "policy": self.policy.to_dict(),
            "summary": self.summary(),
            "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings,
            "structural_changes": self.structural_changes,
        }

    def to_dict(self) -> dict:
        report = self.header_dict()
        report["requests"] = {rid: self.request_entry(rid) for rid in self.request_order}
        return report


def _sort_key(rid: str) -> tuple:
    return (0, int(rid), "") if rid.isdecimal() else (1, 0, rid)


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
    changes.sort(key=lambda c: (_sort_key(c["request"] or ""), c["path"]))
    return changes


# --- per-request gathering --------------------------------------------------------------

def _tokens(request: dict) -> np.ndarray | None:
    tokens = request.get("generated_tokens")
    return None if tokens is None else np.array(tokens, dtype=np.int64)


def _first_divergence(golden: np.ndarray, current: np.ndarray) -> tuple[int | None, list[dict]]:
    """First generated index where the tokens differ, and every differing index."""
    common = min(len(golden), len(current))
    differing = np.flatnonzero(golden[:common] != current[:common])
    changes = [
        {"index": i, "golden": g, "current": c}
        for i, g, c in zip(differing.tolist(), golden[differing].tolist(), current[differing].tolist())
    ]
    g_tail, c_tail = golden[common:].tolist(), current[common:].tolist()
    changes += [{"index": common + i, "golden": t, "current": None} for i, t in enumerate(g_tail)]
    changes += [{"index": common + i, "golden": None, "current": t} for i, t in enumerate(c_tail)]
    if len(differing):
        return int(differing[0]), changes
    return (common if len(golden) != len(current) else None), changes


@dataclass
class _Pair:
    """What the vectorised pass needs to know about one request pair."""

    rid: str
    golden: dict
    current: dict
    first_divergence: int | None
    token_changes: list[dict]
    prompt_logprobs: int | None
    golden_logprobs: list | None
    current_logprobs: list | None
    n_compared: int
    comparable_reason: str  # why positions past n_compared are not comparable, "" if none
    prompt_change: dict | None = None


def _prompt_count(logprobs: list | None, tokens: np.ndarray | None) -> int | None:
    """Entries of the prompt part: all logprobs but one per generated token."""
    if logprobs is None or tokens is None:
        return None
    return len(logprobs) - len(tokens)


def _prompt_change(golden: dict, current: dict, g_prompt: int | None, c_prompt: int | None) -> dict | None:
    """{"golden_tokens", "current_tokens", "text"} when the two requests were given different prompts: the
    input_prompt texts differ, or the prompt parts of the logprobs differ in length. Tokens count as
    prompt logprobs + 1; without logprobs the prompts are measured in characters."""
    g_text, c_text = golden.get("input_prompt"), current.get("input_prompt")
    texts_differ = isinstance(g_text, str) and isinstance(c_text, str) and g_text != c_text
    lengths_differ = g_prompt is not None and c_prompt is not None and g_prompt != c_prompt
    if not (texts_differ or lengths_differ):
        return None
    if g_prompt is not None and c_prompt is not None:
        sizes, unit = (g_prompt + 1, c_prompt + 1), "tokens"
    else:
        sizes, unit = (len(g_text), len(c_text)), "characters"
    return {"golden_tokens": g_prompt + 1 if g_prompt is not None else None,
            "current_tokens": c_prompt + 1 if c_prompt is not None else None,
            "text": f"{sizes[0]} vs {sizes[1]} {unit}"}


def _gather(rid: str, golden: dict, current: dict) -> _Pair:
    g_tokens, c_tokens = _tokens(golden), _tokens(current)
    g_logprobs, c_logprobs = golden.get("logprobs"), current.get("logprobs")
    divergence, token_changes = None, []
    if g_tokens is not None and c_tokens is not None:
        divergence, token_changes = _first_divergence(g_tokens, c_tokens)
    g_prompt, c_prompt = _prompt_count(g_logprobs, g_tokens), _prompt_count(c_logprobs, c_tokens)
    prompt_change = _prompt_change(golden, current, g_prompt, c_prompt)
    if prompt_change:  # outputs of different prompts: nothing to compare, no position counts as drift
        reason = f"prompt differs ({prompt_change['text']})"
        return _Pair(rid, golden, current, None, [], g_prompt, g_logprobs, c_logprobs, 0, reason, prompt_change)
    # Without generated_tokens on a side, the other side tells the split; with none, all is prompt.
    prompt = g_prompt if g_prompt is not None else c_prompt
    if prompt is None and g_logprobs is not None:
        prompt = len(g_logprobs)
    n_compared, reason = 0, ""
    if g_logprobs is not None and c_logprobs is not None:
        common = min(len(g_logprobs), len(c_logprobs))
        if divergence is None:
            n_compared = common
        else:
            n_compared = max(0, min(prompt + divergence, common))
            reason = f"tokens diverge at generated index {divergence}"
    return _Pair(rid, golden, current, divergence, token_changes,
                 prompt, g_logprobs, c_logprobs, n_compared, reason)


# --- the comparison ---------------------------------------------------------------------

def compare(golden: dict, current: dict, policy: Policy = Policy()) -> ComparisonResult:
    """Compare two golden-format documents; pure, no I/O.

    Documents from golden_io.load_golden are used as they are; any other dict
    is validated first (BadInput names "golden" or "current" and the problem).
    """
    if not isinstance(golden, GoldenDocument):
        golden = validate_golden(golden, "golden")
    if not isinstance(current, GoldenDocument):
        current = validate_golden(current, "current")
    golden_ids, current_ids = set(request_ids(golden)), set(request_ids(current))
    order = sorted(golden_ids & current_ids, key=_sort_key)
    checks, warnings = _request_set_checks(golden, golden_ids, current_ids, order, policy)

    pairs = [_gather(rid, golden[rid], current[rid]) for rid in order]
    numerics = _Numerics(pairs, policy)

    requests = {}
    for position, pair in enumerate(pairs):
        request_checks = _request_checks(pair, numerics, position, policy)
        checks.extend(request_checks)
        requests[pair.rid] = numerics.request_result(pair, position, all(c.status != "fail" for c in request_checks))
    checks.extend(_run_checks(golden, current, policy))

    return ComparisonResult(
        policy=policy,
        checks=checks,
        structural_changes=_structural_changes(golden, current, [c for c in checks if c.status == "fail"]),
        warnings=warnings,
        request_order=order,
        requests=requests,
        drift=numerics.drift,
        n_compared=int(numerics.counts.sum()),
        n_not_comparable=sum(numerics.not_comparable(p) for p in pairs),
        n_moved=int(numerics.n_moved.sum()),
        max_ulps=int(numerics.max_ulps.max(initial=0)),
        ulp_width=numerics.ulp_width,
        **numerics.overall_stats(),
    )


def _request_set_checks(golden: dict, golden_ids: set, current_ids: set, order: list[str],
                        policy: Policy) -> tuple[list[Check], list[str]]:
    """Megatron: the current ids are exactly the golden's (no extra id; a missing one fails when its
    golden request is read). Each missing request also fails every metric it was to be judged on."""
    warnings = []
    if not policy.metrics:
        warnings.append("no metrics selected: nothing checked")
        return [], warnings
    missing = sorted(golden_ids - current_ids, key=_sort_key)
    extra = sorted(current_ids - golden_ids, key=_sort_key)
    problems, checks = [], []
    if missing and policy.request_subset:
        warnings.append(f"{len(missing)} golden request(s) absent from current ({_preview(missing)}); "
                        f"compared the {len(order)} present (--request-subset)")
    elif missing:
        problems.append(f"current lacks {len(missing)} golden request id(s): {_preview(missing)}")
        for rid in missing:
            metrics = [m for m in policy.metrics if m in REQUEST_METRICS and m in golden[rid]] or ["metrics"]
            checks += [Check(rid, metric, "fail", "request missing in current") for metric in metrics]
    if extra:
        problems.append(f"current has request ids not in golden: {_preview(extra)}")
    if not order and not problems:
        problems.append("no current requests to compare")
    request_ids_check = Check(None, "request_ids", "fail" if problems else "pass", "; ".join(problems))
    return [request_ids_check, *checks], warnings


def _preview(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


class _Numerics:
    """Tolerance decisions and statistics for all comparable logprobs of all requests at once."""

    def __init__(self, pairs: list[_Pair], policy: Policy):
        self.policy = policy
        self.counts = np.array([p.n_compared for p in pairs], dtype=np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.prompt = np.array([p.prompt_logprobs or 0 for p in pairs], dtype=np.int64)
        total = int(self.counts.sum())
        golden, current = np.empty(total), np.empty(total)
        for pair, start in zip(pairs, self.starts.tolist()):
            n = pair.n_compared
            if n:
                golden[start: start + n] = pair.golden_logprobs[:n]
                current[start: start + n] = pair.current_logprobs[:n]
        over, magnitude = _judge(golden, current, policy)
        self.magnitude = magnitude
        self.finite = np.isfinite(magnitude)
        self.over = over
        self.moved = moved(golden, current)
        self.ulp_width = ulp_width(golden, current)
        self.ulps = ulp_distance(golden, current, self.ulp_width)
        self._segment_stats()
        rows = np.flatnonzero(over)
        request = np.searchsorted(self.starts, rows, side="right") - 1
        index = rows - self.starts[request]
        self.drift = DriftTable(request, index, index >= self.prompt[request], golden[rows], current[rows], self.ulps[rows])
        self.change_bounds = np.searchsorted(request, np.arange(len(pairs) + 1))

    def _segment_stats(self) -> None:
        n = len(self.counts)
        self.n_over = np.zeros(n, np.int64)
        self.n_moved = np.zeros(n, np.int64)
        self.max_ulps = np.zeros(n, np.uint64)
        self.max = np.zeros(n)
        self.mean = np.zeros(n)
        self.p99 = np.zeros(n)
        nonempty = np.flatnonzero(self.counts)
        if not len(nonempty):
            return
        starts = self.starts[nonempty]
        finite_magnitude = np.where(self.finite, self.magnitude, 0.0)
        self.n_over[nonempty] = np.add.reduceat(self.over.astype(np.int64), starts)
        self.n_moved[nonempty] = np.add.reduceat(self.moved.astype(np.int64), starts)
        self.max_ulps[nonempty] = np.maximum.reduceat(self.ulps, starts)
        self.max[nonempty] = np.maximum.reduceat(self.magnitude, starts)
        n_finite = np.add.reduceat(self.finite.astype(np.int64), starts)
        sums = np.add.reduceat(finite_magnitude, starts)
        self.mean[nonempty] = np.divide(sums, n_finite, out=np.zeros(len(starts)), where=n_finite > 0)
        self._segment_p99(nonempty, n_finite)

    def _segment_p99(self, nonempty: np.ndarray, n_finite: np.ndarray) -> None:
        """p99 per request, one numpy call per distinct length (usually one)."""
        all_finite = n_finite == self.counts[nonempty]
        for segment in nonempty[~all_finite]:
            values = self.magnitude[self.starts[segment]: self.starts[segment] + self.counts[segment]]
            values = values[np.isfinite(values)]
            self.p99[segment] = np.percentile(values, 99) if len(values) else 0.0
        regular = nonempty[all_finite]
        for length in np.unique(self.counts[regular]):
            same = regular[self.counts[regular] == length]
            block = self.magnitude[self.starts[same][:, None] + np.arange(length)]
            self.p99[same] = np.percentile(block, 99, axis=1)

    def not_comparable(self, pair: _Pair) -> int:
        lengths = [len(a) for a in (pair.golden_logprobs, pair.current_logprobs) if a is not None]
        return max(lengths) - pair.n_compared if len(lengths) == 2 else 0

    def request_result(self, pair: _Pair, position: int, passed: bool) -> RequestResult:
        text_change = None
        g_text, c_text = pair.golden.get("generated_text"), pair.current.get("generated_text")
        if isinstance(g_text, str) and isinstance(c_text, str) and g_text != c_text:
            shortest = min(len(g_text), len(c_text))
            text_change = {"golden": g_text, "current": c_text,
                           "prefix_match": shortest > 0 and g_text[:shortest] == c_text[:shortest]}
        return RequestResult(
            request_id=pair.rid,
            passed=passed,
            first_divergence=pair.first_divergence,
            token_changes=pair.token_changes,
            text_change=text_change,
            prompt_logprobs=pair.prompt_logprobs,
            prompt_change=pair.prompt_change,
            divergence_text=None if pair.first_divergence is None else text_at(pair.golden, pair.current,
                                                                                pair.first_divergence, None),
            n_compared=pair.n_compared,
            n_over=int(self.n_over[position]),
            n_moved=int(self.n_moved[position]),
            max_ulps=int(self.max_ulps[position]),
            n_not_comparable=self.not_comparable(pair),
            allowed_failures=self.policy.allowed_failures(pair.n_compared),
            max_abs_delta=float(self.max[position]),
            mean_abs_delta=float(self.mean[position]),
            p99_abs_delta=float(self.p99[position]),
            changes=slice(int(self.change_bounds[position]), int(self.change_bounds[position + 1])),
        )

    def overall_stats(self) -> dict:
        finite = self.magnitude[self.finite]
        return {
            "max_abs_delta": float(self.magnitude.max()) if len(self.magnitude) else 0.0,
            "mean_abs_delta": float(finite.mean()) if len(finite) else 0.0,
            "p99_abs_delta": float(np.percentile(finite, 99)) if len(finite) else 0.0,
        }


def _judge(golden: np.ndarray, current: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Which values are out of tolerance, and |current - golden| (0 where equal, inf for NaN mismatches).

    The tolerance is math.isclose's, max(abs_tol, rel_tol * max(|g|, |c|)), so it
    is symmetric; deterministic mode compares bit patterns instead. Infinities
    match only themselves and NaN matches NaN only if the policy says so.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(current - golden)
        if policy.mode is Mode.DETERMINISTIC:
            close = golden.view(np.uint64) == current.view(np.uint64)
        else:
            scale = np.maximum(np.abs(golden), np.abs(current))
            close = magnitude <= np.maximum(policy.abs_tol, policy.rel_tol * scale)
    nonfinite = np.flatnonzero(~np.isfinite(magnitude))
    if len(nonfinite):
        g, c = golden[nonfinite], current[nonfinite]
        same = (g == c) | (policy.nan_equal & np.isnan(g) & np.isnan(c))
        close[nonfinite] = same
        magnitude[nonfinite] = np.where(same, 0.0, np.inf)
    return ~close, magnitude


def compare_arrays(golden: np.ndarray, current: np.ndarray, policy: Policy = Policy(mode=Mode.DETERMINISTIC)) -> dict:
    """Two same-shaped arrays (a module's output in two runs) under ``policy``'s tolerance, element by
    element as logprobs are judged: {"bitwise_equal", "n_over", "n", "max_abs_delta"} (float64)."""
    golden = np.ascontiguousarray(golden, dtype=np.float64).reshape(-1)
    current = np.ascontiguousarray(current, dtype=np.float64).reshape(-1)
    if golden.shape != current.shape:
        raise BadInput(f"arrays of different sizes cannot be compared ({golden.size} vs {current.size})")
    over, magnitude = _judge(golden, current, policy)
    bitwise = bool(np.array_equal(golden.view(np.uint64), current.view(np.uint64)))
    return {"bitwise_equal": bitwise, "n_over": int(over.sum()), "n": int(golden.size),
            "max_abs_delta": float(magnitude.max()) if magnitude.size else 0.0}


# --- checks -----------------------------------------------------------------------------

def _request_checks(pair: _Pair, numerics: _Numerics, position: int, policy: Policy) -> list[Check]:
    checks = []
    for metric in (m for m in policy.metrics if m in REQUEST_METRICS):
        if metric not in pair.golden:
            checks.append(Check(pair.rid, metric, "skip", "not in golden request"))
        elif metric not in pair.current:
            checks.append(Check(pair.rid, metric, "fail", "missing in current request"))
        else:
            problem = _METRIC_CHECKS[metric](pair, numerics, position, policy)
            checks.append(Check(pair.rid, metric, "fail" if problem else "pass", problem))
    if policy.metrics and all(c.status == "skip" for c in checks):
        checks.append(Check(pair.rid, "metrics", "fail",
                            f"none of {', '.join(policy.metrics)} present in golden request: nothing tested"))
    return checks


def _check_tokens(pair: _Pair, numerics: _Numerics, position: int, policy: Policy) -> str:
    if pair.prompt_change:
        return f"prompt differs ({pair.prompt_change['text']}): the outputs of different prompts are not compared"
    if pair.first_divergence is None:
        return ""
    d = pair.first_divergence
    g_tokens, c_tokens = pair.golden["generated_tokens"], pair.current["generated_tokens"]
    g_token = g_tokens[d] if d < len(g_tokens) else "end"
    c_token = c_tokens[d] if d < len(c_tokens) else "end"
    return (f"tokens differ from generated index {d} (golden {g_token}, current {c_token}); "
            f"{len(pair.token_changes)} of {max(len(g_tokens), len(c_tokens))} positions changed")


def _check_logprobs(pair: _Pair, numerics: _Numerics, position: int, policy: Policy) -> str:
    problems = []
    g_len, c_len = len(pair.golden_logprobs), len(pair.current_logprobs)
    if g_len != c_len:
        problems.append(f"length {c_len}, golden {g_len}")
    if pair.comparable_reason:
        problems.append(f"not comparable from index {pair.n_compared}: {pair.comparable_reason}")
    n_over = int(numerics.n_over[position])
    allowed = policy.allowed_failures(pair.n_compared)
    if n_over > allowed:
        first = numerics.drift.index[numerics.change_bounds[position]]
        problems.append(
            f"{n_over} of {pair.n_compared} compared over tolerance (first at index {first}, "
            f"max |delta| {numerics.max[position]:.6g}, allowed {allowed})"
        )
    return "; ".join(problems)


def _check_text(pair: _Pair, numerics: _Numerics, position: int, policy: Policy) -> str:
    golden, current = pair.golden["generated_text"], pair.current["generated_text"]
    shortest = min(len(golden), len(current))
    if shortest == 0:
        return "generated text is empty"
    if golden[:shortest] != current[:shortest]:
        at = next(i for i, (a, b) in enumerate(zip(golden, current)) if a != b)
        return (f"generated text differs at character {at}: "
                f"golden {golden[at:at + 30]!r}, current {current[at:at + 30]!r}")
    return ""


def _check_routing(pair: _Pair, numerics: _Numerics, position: int, policy: Policy) -> str:
    """Megatron: current routing rows picked by the golden's token indices, experts sorted, equal.

    A golden without ``routing_indices_token_indices`` holds every row, as megatron-core records
    them (one per token that went through the model: [prompt + generated - 1, MoE layers, top-k]):
    then every row up to the first diverging token is compared, as a set of experts per layer.
    """
    token_indices = pair.golden.get("routing_indices_token_indices")
    if token_indices is None:
        return _routing_all_rows(pair)
    try:
        golden = np.sort(np.asarray(pair.golden["routing_indices"]), axis=-1)
        current = np.sort(np.asarray(pair.current["routing_indices"])[np.asarray(token_indices)], axis=-1)
    except (IndexError, ValueError, TypeError) as exc:
        return f"routing indices cannot be aligned: {exc}"
    if golden.shape != current.shape:
        return f"routing indices shape {current.shape}, golden {golden.shape}"
    if not np.array_equal(golden, current):
        rows = np.flatnonzero((golden != current).reshape(len(golden), -1).any(axis=1))
        return f"routing differs for {len(rows)} of {len(golden)} tokens (first at row {rows[0]})"
    return ""


def _routing_all_rows(pair: _Pair) -> str:
    """Every comparable row of the two routing arrays: the same expert set per token and layer.

    Row r routes the r-th token fed to the model: the prompt's tokens, then each generated token
    but the last. From the first diverging generated token d on, the inputs differ, so only rows
    before prompt + d are comparable (the token check reports the divergence itself).
    """
    try:
        golden = np.sort(np.asarray(pair.golden["routing_indices"], dtype=np.int64), axis=-1)
        current = np.sort(np.asarray(pair.current["routing_indices"], dtype=np.int64), axis=-1)
    except (ValueError, TypeError) as exc:
        return f"routing indices are not a [tokens, layers, top-k] array of expert ids: {exc}"
    if golden.ndim != 3 or current.ndim != 3:
        return f"routing indices have {current.ndim} dimensions, golden {golden.ndim} (expected [tokens, layers, top-k])"
    if golden.shape[1:] != current.shape[1:]:
        return f"routing indices shape {current.shape}, golden {golden.shape}"
    rows = len(golden)
    if pair.first_divergence is not None:
        tokens = pair.golden.get("generated_tokens") or []
        prompt = rows - max(len(tokens) - 1, 0)
        rows = prompt + pair.first_divergence
    elif len(golden) != len(current):
        return f"routing indices cover {len(current)} tokens, golden {len(golden)}"
    rows = min(rows, len(golden), len(current))
    differs = (golden[:rows] != current[:rows]).any(axis=-1)
    if not differs.any():
        return ""
    token, layer = (int(i) for i in np.argwhere(differs)[0])
    where = deepdiff_path(pair.rid, "routing_indices", token, layer)
    return (f"routing differs in {int(differs.sum())} of {differs.size} (token, layer) expert sets over {rows} tokens; "
            f"first at token {token}, layer {layer} ({where}): golden experts {golden[token, layer].tolist()}, "
            f"current {current[token, layer].tolist()}")


_METRIC_CHECKS = {
    "generated_tokens": _check_tokens,
    "logprobs": _check_logprobs,
    "generated_text": _check_text,
    "routing_indices": _check_routing,
}


def _run_checks(golden: dict, current: dict, policy: Policy) -> list[Check]:
    checks = []
    for metric in (m for m in policy.metrics if m in RUN_METRICS and m in golden):
        if metric not in current:
            checks.append(Check(None, metric, "fail", "missing in current"))
            continue
        check = _throughput_problem if metric == "throughput" else _memory_problem
        problem = check(golden[metric], current[metric])
        checks.append(Check(None, metric, "fail" if problem else "pass", problem))
    return checks


def median(values: list) -> float:
    """statistics.median (which Megatron calls), without importing statistics on every compare."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _throughput_problem(golden: Any, current: Any) -> str:
    """Megatron: median after the warm-up sample, at least 0.9x and below 1.2x the golden's."""
    if not (isinstance(golden, list) and isinstance(current, list) and len(golden) > 1 and len(current) > 1):
        return "needs a list of at least 2 samples on both sides (the first is warm-up)"
    golden_median, current_median = median(golden[1:]), median(current[1:])
    if current_median < 0.9 * golden_median:
        return f"throughput {current_median:.4g} is below 0.9 x golden {golden_median:.4g}"
    if current_median >= 1.2 * golden_median:
        return f"throughput {current_median:.4g} is at least 1.2 x golden {golden_median:.4g}: update the golden"
    return ""


def _median_after_warmup(value: Any) -> float:
    if isinstance(value, list):
        return float(median(value[1:] if len(value) > 1 else value)) if value else math.nan
    return float(value)


def _memory_problem(golden: Any, current: Any) -> str:
    """Megatron: peak allocated bytes within +-5% of the golden's."""
    golden_bytes, current_bytes = _median_after_warmup(golden), _median_after_warmup(current)
    if not golden_bytes > 0:
        return f"golden mem-max-allocated-bytes must be > 0, got {golden_bytes}"
    if not 0.95 * golden_bytes <= current_bytes <= 1.05 * golden_bytes:
        return f"peak memory {current_bytes:.0f} bytes is outside +-5% of golden {golden_bytes:.0f}"
    return ""
