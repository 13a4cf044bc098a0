"""The numbers of a comparison: each request pair's comparable logprobs, judged all at once with numpy.

A request pair's logprobs are comparable up to the first diverging generated token: from there on
they were computed for a different token or context. All comparable values of all requests are
concatenated and decided in one vectorised pass (math.isclose's tolerance, or bit patterns in
deterministic mode); per-request statistics come from segment reductions over that array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logitsmatch.errors import BadInput
from logitsmatch.judge.divergence import text_at
from logitsmatch.judge.figures import plural
from logitsmatch.judge.policy import Mode, Policy
from logitsmatch.judge.results import DriftTable, RequestResult
from logitsmatch.judge.ulps import moved, ulp_distance, ulp_width


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
class RequestPair:
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
    change = {"golden_tokens": g_prompt + 1 if g_prompt is not None else None,
              "current_tokens": c_prompt + 1 if c_prompt is not None else None,
              "text": f"{sizes[0]} vs {sizes[1]} {unit}"}
    if not texts_differ and isinstance(g_text, str) and isinstance(c_text, str):
        shared = min(g_prompt, c_prompt) if lengths_differ else 0
        if shared and _same_values(golden.get("logprobs"), current.get("logprobs"), shared):
            # The same prompt logprobs: the same tokens, but one side keeps logprobs past its prompt and generated
            # tokens (megatron-core 0.16 keeps one for the token a stop word ended the request on).
            change["extra_logprobs"] = abs(g_prompt - c_prompt)
            change["text"] = f"{sizes[0] - 1} vs {sizes[1] - 1} logprobs before the generated ones"
        else:
            change["same_text"] = True  # one prompt, two tokenizations: the sides used different tokenizers
    return change


def _same_values(golden: list | None, current: list | None, count: int) -> bool:
    """The first ``count`` logprobs of both sides agree within Megatron's 1e-3 (what the same tokens give on two
    toolchains; two tokenizations of one text disagree from the first differing token on)."""
    try:
        return bool(np.allclose(np.asarray(golden[:count], dtype=np.float64),
                                np.asarray(current[:count], dtype=np.float64), rtol=0.0, atol=1e-3))
    except (TypeError, ValueError):
        return False


def prompt_change_words(change: dict) -> str:
    """How a report names a prompt change: different prompts, or one prompt tokenized two ways."""
    if change.get("same_text"):
        return (f"same prompt text, tokenised to {change['text']}: the two sides used different tokenizers")
    if change.get("extra_logprobs"):
        return (f"same prompt and prompt logprobs, but {change['text']}: one side keeps "
                f"{plural(change['extra_logprobs'], 'logprob')} past its prompt and generated tokens "
                "(megatron-core 0.16 keeps one for a request a stop word ended)")
    return f"prompt differs ({change['text']})"


def gather_pair(rid: str, golden: dict, current: dict) -> RequestPair:
    """Request ``rid`` of both documents: where its tokens diverge and how many logprobs compare."""
    g_tokens, c_tokens = _tokens(golden), _tokens(current)
    g_logprobs, c_logprobs = golden.get("logprobs"), current.get("logprobs")
    divergence, token_changes = None, []
    if g_tokens is not None and c_tokens is not None:
        divergence, token_changes = _first_divergence(g_tokens, c_tokens)
    g_prompt, c_prompt = _prompt_count(g_logprobs, g_tokens), _prompt_count(c_logprobs, c_tokens)
    prompt_change = _prompt_change(golden, current, g_prompt, c_prompt)
    if prompt_change:  # outputs of different prompts: nothing to compare, no position counts as drift
        reason = prompt_change_words(prompt_change)
        return RequestPair(rid, golden, current, None, [], g_prompt, g_logprobs, c_logprobs, 0, reason, prompt_change)
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
    return RequestPair(rid, golden, current, divergence, token_changes,
                       prompt, g_logprobs, c_logprobs, n_compared, reason)


class Numerics:
    """Tolerance decisions and statistics for all comparable logprobs of all requests at once."""

    def __init__(self, pairs: list[RequestPair], policy: Policy, dtype: str | None = None):
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
        over, magnitude = _out_of_tolerance(golden, current, policy)
        self.magnitude = magnitude
        self.finite = np.isfinite(magnitude)
        self.over = over
        self.moved = moved(golden, current)
        self.ulp_width = ulp_width(golden, current, dtype=dtype)
        self.ulps = ulp_distance(golden, current, self.ulp_width)
        self._segment_stats()
        self.drift, self.change_bounds = self._table(over, golden, current, len(pairs))
        self.moves, self.move_bounds = self._table(self.moved & ~over, golden, current, len(pairs))

    def _table(self, chosen: np.ndarray, golden: np.ndarray, current: np.ndarray,
               n_pairs: int) -> tuple[DriftTable, np.ndarray]:
        """The ``chosen`` values as a table, and where each request's rows start in it (n_pairs + 1 bounds)."""
        rows = np.flatnonzero(chosen)
        request = np.searchsorted(self.starts, rows, side="right") - 1
        index = rows - self.starts[request]
        table = DriftTable(request, index, index >= self.prompt[request], golden[rows], current[rows],
                           self.ulps[rows])
        return table, np.searchsorted(request, np.arange(n_pairs + 1))

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

    def not_comparable(self, pair: RequestPair) -> int:
        lengths = [len(a) for a in (pair.golden_logprobs, pair.current_logprobs) if a is not None]
        return max(lengths) - pair.n_compared if len(lengths) == 2 else 0

    def request_result(self, pair: RequestPair, position: int, passed: bool) -> RequestResult:
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
            moves=slice(int(self.move_bounds[position]), int(self.move_bounds[position + 1])),
        )

    def overall_stats(self) -> dict:
        finite = self.magnitude[self.finite]
        return {
            "max_abs_delta": float(self.magnitude.max()) if len(self.magnitude) else 0.0,
            "mean_abs_delta": float(finite.mean()) if len(finite) else 0.0,
            "p99_abs_delta": float(np.percentile(finite, 99)) if len(finite) else 0.0,
        }


def _out_of_tolerance(golden: np.ndarray, current: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
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
    over, magnitude = _out_of_tolerance(golden, current, policy)
    bitwise = bool(np.array_equal(golden.view(np.uint64), current.view(np.uint64)))
    return {"bitwise_equal": bitwise, "n_over": int(over.sum()), "n": int(golden.size),
            "max_abs_delta": float(magnitude.max()) if magnitude.size else 0.0}

