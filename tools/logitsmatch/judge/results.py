"""What a comparison found, and its JSON report: checks, per-request results, the drift table.

ComparisonResult.to_dict() is the JSON report (schema_version 3: each request's logprob_changes lists
every compared logprob that moved, over_tolerance saying which crossed the tolerance; docs/report_schema.md);
the terminal, Markdown and JUnit renderings (report.py) and the DeepDiff view (deepdiff_view.py) read the same objects.
Non-finite floats are spelled as golden_io.json_float says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from logitsmatch.judge.golden_io import deepdiff_path, json_float
from logitsmatch.judge.policy import Policy


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
    """Per-request findings; its out-of-tolerance logprobs are rows `changes` of the drift table, the ones that
    moved within tolerance rows `moves` of the moves table."""

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
    moves: slice
    prompt_change: dict | None = None  # {"golden_tokens", "current_tokens", "text"} when the prompts differ
    divergence_text: dict | None = None  # from generated_text; judge.divergence.annotate decodes tokens else
    top_n: dict | None = None  # both files' top_n_logprobs compared (judge.top_n), filled in by annotate

    def stats(self) -> dict:
        return {
            "prompt_logprobs": self.prompt_logprobs,
            "compared": self.n_compared,
            "over_tolerance": self.n_over,
            "moved": self.n_moved,
            "max_ulps": self.max_ulps,
            "not_comparable": self.n_not_comparable,
            "allowed_failures": self.allowed_failures,
            "max_abs_delta": json_float(self.max_abs_delta),
            "mean_abs_delta": json_float(self.mean_abs_delta),
            "p99_abs_delta": json_float(self.p99_abs_delta),
        }


@dataclass
class DriftTable:
    """Comparable logprobs as columns (a million rows stay cheap): every one out of tolerance (the drift), or
    every one that moved within it (the moves)."""

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

    def rows(self, rows: slice | np.ndarray, request: str, over_tolerance: bool) -> list[dict]:
        """Report entries {path, request, index, part, golden, current, delta, ulps, over_tolerance} of one
        request; non-finite values as strings."""
        golden, current, delta = (_json_floats(a) for a in (self.golden[rows], self.current[rows], self.delta(rows)))
        parts = np.where(self.generated[rows], "generated", "prompt").tolist()
        prefix = deepdiff_path(request, "logprobs")
        return [
            {"path": f"{prefix}[{i}]", "request": request, "index": i, "part": p, "golden": g, "current": c,
             "delta": d, "ulps": u, "over_tolerance": over_tolerance}
            for i, p, g, c, d, u in zip(self.index[rows].tolist(), parts, golden, current, delta,
                                        self.ulps[rows].tolist())
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


def _json_floats(values: np.ndarray) -> list:
    """json_float of every value of a float array, touching only the non-finite ones."""
    out = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = json_float(out[i])
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
    moves: DriftTable  # the logprobs that moved within tolerance
    n_compared: int
    n_not_comparable: int
    n_moved: int
    max_ulps: int
    ulp_width: str  # "float32" or "float64": the width the ulps are counted in
    max_abs_delta: float
    mean_abs_delta: float
    p99_abs_delta: float
    hardware: dict | None = None  # logitsmatch.hardware.sides() of the two files' provenance, when they have one
    metrics_origin: str | None = None  # which metric set judged the pair, in words ("suite ...'s METRICS, ...")
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
                "moved_within_tolerance": len(self.moves),
                "max_ulps": self.max_ulps,
                "ulp_width": self.ulp_width,
                "not_comparable": self.n_not_comparable,
                "max_abs_delta": json_float(self.max_abs_delta),
                "mean_abs_delta": json_float(self.mean_abs_delta),
                "p99_abs_delta": json_float(self.p99_abs_delta),
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
            "logprob_changes": self.logprob_changes(rid),
            "top_n": r.top_n,
            "generated_text": text,
            "stats": r.stats(),
        }

    def logprob_changes(self, rid: str) -> list[dict]:
        """Every compared logprob of request ``rid`` that moved, over tolerance or within it, in index order."""
        r = self.requests[rid]
        over, within = self.drift.rows(r.changes, rid, True), self.moves.rows(r.moves, rid, False)
        if not (over and within):  # each table is in index order already
            return over or within
        return sorted(over + within, key=lambda entry: entry["index"])

    def header_dict(self) -> dict:
        """The report without its per-request entries (written first when streaming)."""
        return {
            "schema_version": 3,
            "verdict": self.verdict,
            "policy": self.policy.to_dict(),
            "summary": self.summary(),
            "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings,
            "structural_changes": self.structural_changes,
            **({"metrics_origin": self.metrics_origin} if self.metrics_origin else {}),
            **({"hardware": {key: self.hardware[key] for key in ("golden", "current", "same_class")}}
               if self.hardware else {}),
        }

    def to_dict(self) -> dict:
        report = self.header_dict()
        report["requests"] = {rid: self.request_entry(rid) for rid in self.request_order}
        return report
