"""Request schedules: in which order and company a suite's prompts reach the engine (``run --schedule S``).

A schedule changes what runs beside each of the suite's requests, never the requests themselves:

* ``together``: every prompt added at once (the suite's own schedule; the plain result label);
* ``alone``: each prompt submitted after the previous one finished, on the same engine (a batch of one);
* ``reversed``: every prompt added at once, in reverse order;
* ``mixed``: the suite's prompts interleaved with ``MIXED_EXTRA_WORDS`` extra prompts of other lengths,
  drawn from ``MIXED_WORDS`` by ``random.Random(MIXED_SEED)``; only the suite's requests are written;
* ``chunked``: every prompt at once with chunked prefill at ``CHUNK_TOKENS`` tokens per step;
* ``forward``: no engine: megatron-core's ``GPTModel`` forward over each request's whole token sequence
  (prompt + the generated tokens of a reference result), the training path without KV cache or dynamic
  context, log-softmax gathered at each next token (train/inference logprob parity).

The plan carries the schedule as plain data (``plan_entry``); the ranks only carry it out.
"""

from __future__ import annotations

import random

from logitsmatch.errors import BadInput

SCHEDULES = ("together", "alone", "reversed", "mixed", "chunked", "forward")
DEFAULT = "together"

# chunked: tokens per prefill step (the context's max_tokens: megatron-core splits a longer prompt into chunks
# of at most this many tokens, and a step holds at most this many tokens in all). The smallest it takes: the
# context pads a step's tokens up to a multiple of its TOKEN_ROUNDER (64), which must fit in max_tokens. The
# suites' seed prompt (129 tokens) is prefilled in three chunks, and no step prefills all four prompts together.
CHUNK_TOKENS = 64

# mixed: the extra prompts, documented here and recorded in the plan. Three lengths unlike the suite's, one
# before each of its prompts after the first (so every suite request shares its batch with a stranger).
MIXED_SEED = 20261203
MIXED_EXTRA_WORDS = (3, 57, 160)
MIXED_WORDS = ("the", "river", "number", "engine", "old", "bread", "light", "under", "model", "quietly", "seven",
               "across", "history", "paper", "winter", "garden", "signal", "between", "machine", "careful")


def parse(text: str) -> list[str]:
    """'together,alone' -> ['together', 'alone'], each once, each known."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise BadInput("--schedules names no schedule")
    for name in names:
        check(name)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInput(f"schedule {duplicates[0]!r} is listed twice")
    return names


def check(name: str) -> str:
    if name not in SCHEDULES:
        raise BadInput(f"unknown schedule {name!r} (known: {', '.join(SCHEDULES)})")
    return name


def extra_prompts(seed: int = MIXED_SEED, words: tuple[int, ...] = MIXED_EXTRA_WORDS) -> list[str]:
    """The mixed schedule's extra prompts: the same text on every machine and Python (random.Random is specified)."""
    draw = random.Random(seed)
    return [" ".join(draw.choice(MIXED_WORDS) for _ in range(count)).capitalize() + "." for count in words]


def plan_entry(name: str, prompts: list[str]) -> dict:
    """``plan["schedule"]``: what the client submits, in order, and how.

    ``submit`` lists the submitted prompts in submission order, each with the suite request id it answers
    (None: an extra prompt, not written to the result); ``one_at_a_time`` waits for each request to finish
    before the next is submitted; ``engine`` False is the forward pass without an engine."""
    check(name)
    suite = [{"prompt": prompt, "request_id": index} for index, prompt in enumerate(prompts)]
    entry = {"name": name, "submit": suite, "one_at_a_time": name == "alone", "engine": name != "forward",
             "chunked_prefill_tokens": CHUNK_TOKENS if name == "chunked" else None}
    if name == "reversed":
        entry["submit"] = suite[::-1]
    elif name == "mixed":
        extras = [{"prompt": prompt, "request_id": None} for prompt in extra_prompts()]
        entry["submit"] = [suite[0]] + [item for pair in zip(extras, suite[1:], strict=False) for item in pair]
        entry["submit"] += suite[len(extras) + 1:] + extras[len(suite) - 1:]
        entry["mixed"] = {"seed": MIXED_SEED, "extra_words": list(MIXED_EXTRA_WORDS)}
    return entry
