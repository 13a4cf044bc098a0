"""A suite's CPU plan as `logitsmatch run` would build it, for tests of what the plan holds."""

from __future__ import annotations

from logitsmatch.run.plan import build_plan, synthetic_checkpoint, tokenizer_spec
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite


def plan_of(project, name: str) -> dict:
    suite = load_suite(project, name)
    tokenizer = tokenizer_spec(suite, project, False, None)
    plan, _ = build_plan(suite, get_platform("cpu"), synthetic_checkpoint(suite, project, tokenizer), project,
                         tokenizer, "127.0.0.1")
    return plan
