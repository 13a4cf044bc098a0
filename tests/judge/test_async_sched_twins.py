"""Async scheduling reorders the dynamic engine's step, not its numbers.

Megatron-LM's gpt_dynamic_inference_tp1_pp1_583m_async_sched differs from gpt_dynamic_inference_tp1_pp1_583m_logitsmatch
in --inference-dynamic-batching-async-sched-mode async (megatron-core prepares each step's next batch before
resolving its requests) and in async scheduling's want of logprobs alone. Their goldens (and their tiny
siblings') hold that the tokens do not move: the same requests, prompts and tokens on every toolchain that has
both (async scheduling: megatron-core 0.19+).
"""

from __future__ import annotations

import pytest
import yaml

from support import PROJECT, cpu_goldens

ASYNC_SCHED = "--inference-dynamic-batching-async-sched-mode"
TWINS = [
    ("gpt_dynamic_inference_tp1_pp1_583m_async_sched", "gpt_dynamic_inference_tp1_pp1_583m_logitsmatch"),
    ("gpt_dynamic_inference_tp1_pp1_tiny_async_sched", "gpt_dynamic_inference_tp1_pp1_tiny_logitsmatch"),
]


@pytest.mark.parametrize("async_suite, twin", TWINS)
def test_the_async_suite_differs_from_its_twin_in_the_schedule_and_logprobs_alone(async_suite, twin):
    ours, theirs = (yaml.safe_load((PROJECT / "suites" / name / "model_config.yaml").read_text())
                    for name in (async_suite, twin))
    assert ours["MODEL_ARGS"].pop(ASYNC_SCHED) == "async"
    assert theirs["MODEL_ARGS"].pop("--return-log-probs") is True
    assert ours["MODEL_ARGS"] == theirs["MODEL_ARGS"]


@pytest.mark.parametrize("async_suite, twin", TWINS)
def test_the_async_suite_has_its_twins_tokens(async_suite, twin):
    ours, theirs = cpu_goldens(async_suite), cpu_goldens(twin)
    shared = set(ours) & set(theirs)
    assert shared, f"{async_suite} and {twin} share no CPU golden"
    for name in shared:
        assert ours[name].keys() == theirs[name].keys(), name
        for request, entry in ours[name].items():
            other = theirs[name][request]
            assert entry["input_prompt"] == other["input_prompt"], (name, request)
            assert entry["generated_tokens"] == other["generated_tokens"], (name, request)
            assert len(entry["generated_tokens"]) == 128 and "logprobs" not in entry, (name, request)
