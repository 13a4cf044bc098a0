"""Numbers in one voice: how every report of the judge (and the tables drawn from it) writes a figure.

One precision per kind of figure, whatever the report: a logprob a reader may look up is written in full
(the shortest text that reads back as the same float); a difference or a statistic of differences
(delta, max / mean / p99 |delta|) with two significant digits and an unpadded exponent (4.8e-7); a count
with its noun in the singular or the plural as the count asks ("1 ulp", "2 tokens").
"""

from __future__ import annotations

import math


def exact(value: float) -> str:
    """A logprob as it is: the shortest text that reads back as the same float (Python's repr)."""
    return repr(float(value))


def short_number(value: float) -> str:
    """A difference or a statistic of differences: two significant digits, exponent unpadded: 4.8e-7, 0.0031, 0."""
    text = f"{value:.2g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def signed_number(value: float) -> str:
    """A signed difference (current - golden) as short_number writes it, with its sign: +4.8e-7, -0.0031."""
    if math.isnan(value):
        return short_number(value)
    return ("+" if value >= 0 else "-") + short_number(abs(value))


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """"1 token", "2 tokens", "0 tokens" (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def ulps_text(ulps: int, width: str | None = None) -> str:
    """"1 ulp", "2 ulps"; with a width other than float32 (the usual one) it is named: "2 bfloat16 ulps"; a value
    that moved by less than one ulp of a coarser width (rounded to the same bfloat16) is "under 1 bfloat16 ulp"."""
    noun = "ulp" if width in (None, "float32") else f"{width} ulp"
    return f"under 1 {noun}" if ulps == 0 else plural(ulps, noun)
