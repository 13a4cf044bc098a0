"""Small golden-format documents for comparator tests, and ways to edit copies of them."""

from __future__ import annotations

import copy


def make_request(prompt=(-1.5, -2.25, -0.5), tokens=(11, 12, 13), generated=(-0.1, -0.2, -0.3), text=" a b c"):
    return {
        "input_prompt": "p q r s",
        "generated_text": text,
        "generated_tokens": list(tokens),
        "latency": 1.25,
        "logprobs": list(prompt) + list(generated),
    }


def make_doc(n_requests=2, **run_keys):
    doc = {str(i): make_request() for i in range(n_requests)}
    doc.update(run_keys)
    return doc


def edited(doc, edit):
    """A deep copy of `doc` changed by `edit(copy)`."""
    out = copy.deepcopy(doc)
    edit(out)
    return out


def _parent(doc, path):
    """The container holding ``path``'s last key."""
    for key in path[:-1]:
        doc = doc[key]
    return doc


def set_at(path, value):
    def apply(doc):
        _parent(doc, path)[path[-1]] = value
    return apply


def add_at(path, amount):
    def apply(doc):
        _parent(doc, path)[path[-1]] += amount
    return apply


BASE = make_doc()
DEFAULT = ["generated_tokens", "logprobs"]
