"""What the two runs said where they part: the text around each request's first diverging token.

From ``generated_text`` when both files carry it (the characters around the first one that differs),
otherwise by decoding the token ids with the suite's tokenizer (its vocabulary file, decoded in pure
Python, so the harness stays torch- and tiktoken-free), otherwise nothing. The result's requests carry
it as ``divergence_text``; every report shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from logitsmatch.judge import top_n

CONTEXT_CHARS = 30
CONTEXT_TOKENS = 8


def annotate(result, golden: dict, current: dict, decode: Callable[[list[int]], str] | None) -> None:
    """Decode the text at the divergence of every request whose files carry no generated_text to show it
    (compare fills in the others), and compare the requests' top-n logprobs where both files carry them."""
    top_n.annotate(result, golden, current, decode)
    if decode is None:
        return
    for rid, request in result.requests.items():
        if request.first_divergence is not None and request.divergence_text is None:
            request.divergence_text = text_at(golden[rid], current[rid], request.first_divergence, decode)


def text_at(golden: dict, current: dict, index: int, decode: Callable[[list[int]], str] | None) -> dict | None:
    """{"source", "before", "golden", "current"}: the common text before the divergence and each side's text
    from it on (a short window), or None when neither generated_text nor a tokenizer tells it."""
    g_text, c_text = golden.get("generated_text"), current.get("generated_text")
    if isinstance(g_text, str) and isinstance(c_text, str) and g_text != c_text:
        at = next((i for i, (a, b) in enumerate(zip(g_text, c_text)) if a != b), min(len(g_text), len(c_text)))
        return {"source": "generated_text", "before": g_text[max(0, at - CONTEXT_CHARS): at],
                "golden": g_text[at: at + CONTEXT_CHARS], "current": c_text[at: at + CONTEXT_CHARS]}
    g_tokens, c_tokens = golden.get("generated_tokens"), current.get("generated_tokens")
    if decode is None or not isinstance(g_tokens, list) or not isinstance(c_tokens, list):
        return None
    start = max(0, index - CONTEXT_TOKENS)
    return {"source": "tokenizer", "before": decode(g_tokens[start:index]),
            "golden": decode(g_tokens[index: index + CONTEXT_TOKENS]),
            "current": decode(c_tokens[index: index + CONTEXT_TOKENS])}


def suite_decoder(suite, project: Path) -> Callable[[list[int]], str] | None:
    """The decoder of the suite's shipped tokenizer, or None when the suite names none that is there."""
    from logitsmatch.vocab import load_decoder

    path = project / suite.tokenizer_model if suite.tokenizer_model else None
    return load_decoder(path) if path is not None and path.is_file() else None


def describe(text: dict | None) -> str:
    """One line: …'common text' then golden 'x', current 'y' (from generated_text | the tokenizer)."""
    if not text:
        return ""
    source = "generated_text" if text["source"] == "generated_text" else "the tokenizer"
    return (f"text: ...{text['before']!r} then golden {text['golden']!r}, current {text['current']!r} "
            f"(from {source})")
