"""What counts as a match: the comparison mode, its tolerances and budget, and the metrics judged.

One Policy serves every judgement (compare, run, matrix, invariance, localize, explain). It is a
base module, not part of judge, because a suite states its policy (METRICS and the ``comparison``
block of its logitsmatch.yaml) and ``suites.load_suite`` builds it, once, before anything runs: a bad
block is refused there, and the base modules may not import judge. The subcommands that let their
user choose the policy declare its options with ``judge.policy.add_policy_options`` and build it with
Policy.from_args, so every option is spelled, shown and validated one way.
"""

from __future__ import annotations

import argparse
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from logitsmatch.errors import BadInput

REQUEST_METRICS = ("generated_tokens", "logprobs", "generated_text", "routing_indices")
RUN_METRICS = ("throughput", "mem-max-allocated-bytes")
KNOWN_METRICS = REQUEST_METRICS + RUN_METRICS
DEFAULT_METRICS = ("generated_tokens", "logprobs")

POLICY_OPTIONS = ("mode", "abs_tol", "rel_tol", "failure_budget", "nan_equal", "metrics", "request_subset")

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
# Invariance compares one toolchain with itself at other layouts and schedules, where only the order of fp32
# reductions changes (a few 1e-6): its default leaves an order of magnitude above that, ten times inside Megatron's.
INVARIANCE_ABS_TOL = 1e-4
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
        """Policy of a suite: the METRICS list of its model_config.yaml and the optional ``comparison``
        mapping of its logitsmatch.yaml (``load_suite`` has checked that it is a mapping)."""
        comparison = {} if comparison is None else comparison
        unknown = sorted(set(comparison) - set(_COMPARISON_KEYS), key=str)
        if unknown:
            raise BadInput(f"comparison: unknown key(s) {', '.join(map(str, unknown))} "
                           f"(known: {', '.join(_COMPARISON_KEYS)})")
        return cls(metrics=() if metrics is None else metrics, **comparison)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **fixed: Any) -> Policy:
        """Policy of a command line configured by add_policy_options; ``fixed`` sets the fields the
        subcommand does not offer as options (localize's mode, invariance's metrics)."""
        given = {name: getattr(args, name) for name in POLICY_OPTIONS if hasattr(args, name)}
        if isinstance(given.get("metrics"), str):
            given["metrics"] = tuple(m.strip() for m in given["metrics"].split(",") if m.strip())
        return cls(**given, **fixed)

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
