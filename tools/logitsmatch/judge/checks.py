"""The checks of a comparison, one per metric and request (JUnit testcases), as Megatron makes them.

Request checks: the request-id set, then per request generated_tokens, logprobs (within the
policy's tolerance and failure budget), generated_text and routing_indices. Run checks:
throughput and peak memory against the golden's, with Megatron's bounds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logitsmatch.judge.figures import plural, short_number, ulps_text
from logitsmatch.judge.golden_io import request_sort_key
from logitsmatch.judge.numerics import Numerics, RequestPair, prompt_change_words
from logitsmatch.judge.policy import REQUEST_METRICS, RUN_METRICS, Policy
from logitsmatch.judge.results import Check, deepdiff_path


def request_set_checks(golden: dict, golden_ids: set, current_ids: set, order: list[str],
                       policy: Policy) -> tuple[list[Check], list[str]]:
    """Megatron: the current ids are exactly the golden's (no extra id; a missing one fails when its
    golden request is read). Each missing request also fails every metric it was to be judged on."""
    warnings = []
    missing = sorted(golden_ids - current_ids, key=request_sort_key)
    extra = sorted(current_ids - golden_ids, key=request_sort_key)
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


def request_checks(pair: RequestPair, numerics: Numerics, position: int, policy: Policy) -> list[Check]:
    """One check per metric of the policy for this request; a golden request with none of them fails."""
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


def _check_tokens(pair: RequestPair, numerics: Numerics, position: int, policy: Policy) -> str:
    if pair.prompt_change:
        same_prompt = pair.prompt_change.get("same_text") or pair.prompt_change.get("extra_logprobs")
        what = "the outputs are" if same_prompt else "the outputs of different prompts are"
        return f"{prompt_change_words(pair.prompt_change)}: {what} not compared"
    if pair.first_divergence is None:
        return ""
    d = pair.first_divergence
    g_tokens, c_tokens = pair.golden["generated_tokens"], pair.current["generated_tokens"]
    g_token = g_tokens[d] if d < len(g_tokens) else "end"
    c_token = c_tokens[d] if d < len(c_tokens) else "end"
    return (f"tokens differ from generated index {d} (golden {g_token}, current {c_token}); "
            f"{len(pair.token_changes)} of {plural(max(len(g_tokens), len(c_tokens)), 'position')} changed")


def _check_logprobs(pair: RequestPair, numerics: Numerics, position: int, policy: Policy) -> str:
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
            f"max |delta| {short_number(float(numerics.max[position]))}, "
            f"{ulps_text(int(numerics.max_ulps[position]), numerics.ulp_width)}, allowed {allowed})"
        )
    return "; ".join(problems)


def _check_text(pair: RequestPair, numerics: Numerics, position: int, policy: Policy) -> str:
    golden, current = pair.golden["generated_text"], pair.current["generated_text"]
    shortest = min(len(golden), len(current))
    if shortest == 0:
        return "generated text is empty"
    if golden[:shortest] != current[:shortest]:
        at = next(i for i, (a, b) in enumerate(zip(golden, current)) if a != b)
        return (f"generated text differs at character {at}: "
                f"golden {golden[at:at + 30]!r}, current {current[at:at + 30]!r}")
    return ""


def _check_routing(pair: RequestPair, numerics: Numerics, position: int, policy: Policy) -> str:
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
        return f"routing differs for {len(rows)} of {plural(len(golden), 'token')} (first at row {rows[0]})"
    return ""


def _routing_all_rows(pair: RequestPair) -> str:
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
        return (f"routing indices have {current.ndim} dimensions, golden {golden.ndim} "
                "(expected [tokens, layers, top-k])")
    if golden.shape[1:] != current.shape[1:]:
        return f"routing indices shape {current.shape}, golden {golden.shape}"
    rows = len(golden)
    if pair.first_divergence is not None:
        tokens = pair.golden.get("generated_tokens") or []
        prompt = rows - max(len(tokens) - 1, 0)
        rows = prompt + pair.first_divergence
    elif len(golden) != len(current):
        return f"routing indices cover {plural(len(current), 'token')}, golden {len(golden)}"
    rows = min(rows, len(golden), len(current))
    differs = (golden[:rows] != current[:rows]).any(axis=-1)
    if not differs.any():
        return ""
    token, layer = (int(i) for i in np.argwhere(differs)[0])
    where = deepdiff_path(pair.rid, "routing_indices", token, layer)
    return (f"routing differs in {int(differs.sum())} of {differs.size} (token, layer) expert sets over "
            f"{plural(rows, 'token')}; "
            f"first at token {token}, layer {layer} ({where}): golden experts {golden[token, layer].tolist()}, "
            f"current {current[token, layer].tolist()}")


_METRIC_CHECKS = {
    "generated_tokens": _check_tokens,
    "logprobs": _check_logprobs,
    "generated_text": _check_text,
    "routing_indices": _check_routing,
}


def run_checks(golden: dict, current: dict, policy: Policy) -> list[Check]:
    """The run-level metrics of the policy that the golden holds."""
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
