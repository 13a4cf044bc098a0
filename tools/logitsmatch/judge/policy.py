"""The policy's command-line options: one declaration, so every subcommand spells, shows and validates them alike.

The Policy itself lives in the base module ``logitsmatch.policy`` (a suite's policy is built when the suite
loads, and the base modules may not import judge); it is re-exported here for the judge and its callers.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from logitsmatch.policy import (
    DEFAULT_METRICS,
    INVARIANCE_ABS_TOL,
    KNOWN_METRICS,
    POLICY_OPTIONS,
    REQUEST_METRICS,
    RUN_METRICS,
    Mode,
    Policy,
)

__all__ = ["INVARIANCE_ABS_TOL", "KNOWN_METRICS", "POLICY_OPTIONS", "REQUEST_METRICS", "RUN_METRICS", "Mode", "Policy",
           "add_policy_options", "policy_over"]


def add_policy_options(parser: argparse.ArgumentParser, options: Iterable[str] = POLICY_OPTIONS, *,
                       mode: Mode | str = Mode.MEGATRON, abs_tol: float | None = None,
                       rel_tol: float | None = None, suite_defaults: bool = False) -> None:
    """Declare the command-line options of the Policy fields in ``options`` (the subcommand fixes the rest).

    ``mode``, ``abs_tol`` and ``rel_tol`` are the subcommand's defaults; None leaves a tolerance to the
    mode. Values stay text for Policy to validate, so a bad one is a one-line error (exit 2), not
    argparse's usage screen. ``suite_defaults``: every option left out is None, the value of the suite
    the files are recognised as (``policy_over``), else of the defaults above.
    """
    mode = Mode.parse(mode)
    declarations = {
        "mode": ("--mode", dict(
            default=mode.value, metavar="{" + ",".join(m.value for m in Mode) + "}",
            help=f"how logprobs are judged: megatron (abs 1e-3, as Megatron-LM), deterministic (bit-exact), "
                 f"approximate (abs/rel tolerance with a failure budget); default {mode.value}")),
        "abs_tol": ("--abs-tol", dict(default=abs_tol, metavar="X",
                                      help=f"absolute tolerance (default: {_shown(abs_tol)})")),
        "rel_tol": ("--rel-tol", dict(default=rel_tol, metavar="X",
                                      help=f"relative tolerance (default: {_shown(rel_tol)})")),
        "failure_budget": ("--failure-budget", dict(
            metavar="N", help="out-of-tolerance logprobs allowed per request (default: the mode's)")),
        "nan_equal": ("--nan-equal", dict(action=argparse.BooleanOptionalAction, default=True,
                                          help="whether NaN matches NaN (default: yes)")),
        "metrics": ("--metrics", dict(
            default=",".join(DEFAULT_METRICS), metavar="LIST",
            help=f"comma-separated metrics to check, of {', '.join(KNOWN_METRICS)} "
                 f"(default: {','.join(DEFAULT_METRICS)})")),
        "request_subset": ("--request-subset", dict(
            action="store_true", help="judge only the golden requests the current file has (default, as "
                                      "Megatron: a golden request missing from current fails)")),
    }
    for name in options:
        flag, settings = declarations[name]
        if suite_defaults:
            settings = {**settings, "default": None,
                        "help": settings["help"] + "; left out: the value of the suite the files are recognised as"}
        parser.add_argument(flag, **settings)


def policy_over(base: Policy | None, args: argparse.Namespace) -> Policy:
    """The policy of a command line declared with ``suite_defaults``: each option given overrides ``base`` (a
    suite's policy; None: Policy()'s defaults). A mode given brings its own tolerances and budget unless
    those are given too: a suite's megatron tolerance would make a deterministic mode given alone invalid."""
    base = base or Policy()
    given = {name: getattr(args, name) for name in POLICY_OPTIONS if getattr(args, name, None) is not None}
    if isinstance(given.get("metrics"), str):
        given["metrics"] = tuple(m.strip() for m in given["metrics"].split(",") if m.strip())
    fields = {name: getattr(base, name) for name in POLICY_OPTIONS}
    if "mode" in given and Mode.parse(given["mode"]) is not base.mode:
        for name in ("abs_tol", "rel_tol", "failure_budget"):
            fields.pop(name)
    return Policy(**{**fields, **given})


def _shown(tolerance: float | None) -> str:
    return "the mode's" if tolerance is None else f"{tolerance:g}"
