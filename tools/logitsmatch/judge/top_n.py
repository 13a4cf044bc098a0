"""Two runs' top-n logprobs side by side: at a request's first token divergence, and as a KL estimate.

megatron-core (SamplingParams.top_n_logprobs) keeps, for every generated position, the n most likely
tokens and their logprobs as ``{token text: logprob}`` (the text of each id detokenized alone; two ids
with the same text, such as partial UTF-8 bytes shown as U+FFFD, share one key). Megatron's driver writes
them as ``top_n_logprobs`` (generated positions) and ``prompt_top_n_logprobs``.

Two findings per request whose files both carry ``top_n_logprobs``:

* **At the first token divergence** (vLLM's rule for comparing two implementations of one model: a
  divergence is benign where each side's token is among the other side's top-n): whether the golden's
  token is in the *current* run's top-n at that position, read from the current file, and whether the
  current token is in the *golden's* top-n, read from the golden file. The token is looked up by its
  text, so a tokenizer must decode it; without one each answer is None. The verdict is Megatron's and
  stays so: this says how bad a divergence is, not whether there is one.
* **A KL estimate over the shared top-n**, KL(golden || current), at every position up to and including
  the first divergence (after it the contexts differ). It is an estimate over the shared support only:
  the tokens in both sides' top-n, each side's probabilities renormalised to sum to 1 over them. Without
  renormalising the sum is not a divergence (the two sides miss different tails, so it can be negative,
  and it shrinks with the shared mass); renormalised it is the KL of the two distributions conditioned on
  the shared tokens, >= 0 and 0 exactly when both rank and weigh those tokens alike. What it cannot see
  is mass outside the shared support: the membership rule above and the count of shared tokens say that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FIELD = "top_n_logprobs"


def shared_support_kl(golden: dict, current: dict) -> tuple[float | None, int]:
    """(KL(golden || current) over the tokens in both top-n, each side renormalised over them; how many
    tokens that is). None when they share no token."""
    shared = [token for token in golden if token in current]
    if not shared:
        return None, 0
    p = np.array([golden[token] for token in shared], dtype=np.float64)
    q = np.array([current[token] for token in shared], dtype=np.float64)
    p -= np.logaddexp.reduce(p)  # log of the renormalised probabilities
    q -= np.logaddexp.reduce(q)
    return max(float(np.sum(np.exp(p) * (p - q))), 0.0), len(shared)


def _positions(request: dict) -> list | None:
    """The request's top-n per generated position (golden_io has checked their shape), or None (absent, or null
    where a run asked for none)."""
    value = request.get(FIELD)
    return value if isinstance(value, list) else None


def compare_top_n(golden: dict, current: dict, divergence: int | None,
                  decode: Callable[[list[int]], str] | None) -> dict | None:
    """What the two requests' top-n logprobs say, or None when either lacks them.

    {"n", "kl": {"max", "at", "mean", "positions", "least_shared"} | None, "at_divergence": None | {...}}:
    the KL estimate over positions 0..divergence (every position both sides have, when tokens agree), and
    at the divergence each side's token, whether it is in the other side's top-n, and which file was read.
    """
    g_top, c_top = _positions(golden), _positions(current)
    if g_top is None or c_top is None:
        return None
    last = min(len(g_top), len(c_top)) if divergence is None else min(divergence + 1, len(g_top), len(c_top))
    kls, shared = [], []
    for index in range(last):
        kl, count = shared_support_kl(g_top[index], c_top[index])
        kls.append(np.nan if kl is None else kl)
        shared.append(count)
    values = np.array(kls, dtype=np.float64)
    finite = values[~np.isnan(values)]
    kl = None if not finite.size else {
        "max": float(finite.max()), "at": int(np.nanargmax(values)), "mean": float(finite.mean()),
        "positions": int(finite.size), "least_shared": int(min(shared)),
    }
    n = max((len(entry) for entry in (*g_top, *c_top)), default=0)
    return {"n": n, "kl": kl, "at_divergence": _at_divergence(golden, current, g_top, c_top, divergence, decode)}


def _at_divergence(golden: dict, current: dict, g_top: list, c_top: list, index: int | None,
                   decode: Callable[[list[int]], str] | None) -> dict | None:
    if index is None or index >= len(g_top) or index >= len(c_top):
        return None
    g_tokens, c_tokens = golden.get("generated_tokens", []), current.get("generated_tokens", [])
    if index >= len(g_tokens) or index >= len(c_tokens):
        return None  # one side stopped there: no token of its own to look up
    g_token, c_token = g_tokens[index], c_tokens[index]
    g_text = decode([g_token]) if decode else None
    c_text = decode([c_token]) if decode else None
    return {
        "index": index,
        "golden_token": g_token, "golden_text": g_text,
        "current_token": c_token, "current_text": c_text,
        "golden_token_in_current_top_n": None if g_text is None else g_text in c_top[index],
        "current_token_in_golden_top_n": None if c_text is None else c_text in g_top[index],
        "read": "the golden token in the current file's top_n_logprobs, the current token in the golden file's",
    }


def annotate(result, golden: dict, current: dict, decode: Callable[[list[int]], str] | None) -> None:
    """Fill in ``top_n`` of every compared request whose files both carry top_n_logprobs."""
    for rid, request in result.requests.items():
        if request.prompt_change is None:
            request.top_n = compare_top_n(golden[rid], current[rid], request.first_divergence, decode)


def describe(top_n: dict | None) -> str:
    """One line for the report: the rule's answers at the divergence and the KL estimate."""
    if not top_n:
        return ""
    parts = []
    at = top_n["at_divergence"]
    if at is not None:
        def answer(value: bool | None) -> str:
            return "unknown (no tokenizer)" if value is None else ("yes" if value else "no")

        def token(side: str) -> str:
            text = at[f"{side}_text"]
            return f"token {at[f'{side}_token']}" if text is None else repr(text)

        parts.append(f"top-{top_n['n']} at index {at['index']}: golden {token('golden')} in current's top-n "
                     f"{answer(at['golden_token_in_current_top_n'])}, current {token('current')} in golden's "
                     f"top-n {answer(at['current_token_in_golden_top_n'])}")
    kl = top_n["kl"]
    if kl is not None:
        parts.append(f"KL(golden||current) over the shared top-{top_n['n']}, renormalised: max {kl['max']:.3g} "
                     f"at index {kl['at']}, mean {kl['mean']:.3g} over {kl['positions']} position(s)")
    return "; ".join(parts)
