"""Properties of compare and the CLI, checked with hypothesis on generated documents."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitsmatch import cli
from logitsmatch.judge.compare import compare
from logitsmatch.judge.policy import Mode, Policy

logprob = st.one_of(
    st.floats(min_value=-30.0, max_value=0.0),
    st.sampled_from([math.nan, -math.inf, math.inf, -0.0]),
)


@st.composite
def requests(draw):
    n_generated = draw(st.integers(0, 5))
    n_prompt = draw(st.integers(0, 5))
    return {
        "input_prompt": "prompt",
        "generated_text": draw(st.text(max_size=8)),
        "generated_tokens": draw(st.lists(st.integers(0, 9), min_size=n_generated, max_size=n_generated)),
        "latency": draw(st.floats(0, 10)),
        "logprobs": draw(st.lists(logprob, min_size=n_prompt + n_generated, max_size=n_prompt + n_generated)),
    }


documents = st.dictionaries(st.sampled_from(["0", "1", "2", "10"]), requests(), min_size=1)
policies = st.builds(
    Policy,
    mode=st.sampled_from(list(Mode)),
    nan_equal=st.just(True),
    metrics=st.sampled_from(
        [("generated_tokens", "logprobs"), ("logprobs",), ("generated_tokens", "logprobs", "generated_text")]
    ),
)


@settings(max_examples=40, deadline=None)
@given(doc=documents, policy=policies)
def test_a_document_matches_itself(doc, policy):
    result = compare(doc, copy.deepcopy(doc), policy)
    texts_empty = any(r["generated_text"] == "" for r in doc.values())
    assert result.passed or ("generated_text" in policy.metrics and texts_empty)  # Megatron: empty text fails
    assert result.n_over_tolerance == 0 and result.tokens_agree and result.structural_changes == []


@st.composite
def perturbed_pairs(draw):
    golden = draw(documents)
    current = copy.deepcopy(golden)
    for request in current.values():
        values = request["logprobs"]
        for i in draw(st.sets(st.integers(0, max(len(values) - 1, 0)), max_size=3)) if values else ():
            values[i] = draw(logprob) if draw(st.booleans()) else values[i] + draw(st.floats(-0.01, 0.01))
        tokens = request["generated_tokens"]
        if tokens and draw(st.booleans()):
            tokens[draw(st.integers(0, len(tokens) - 1))] += 1
        if tokens and draw(st.booleans()):
            tokens.pop()
            values.pop()
    return golden, current


def _changes(result):
    return {
        (rid, e["index"], e["part"]): (e["golden"], e["current"], e["delta"])
        for rid, entry in result.to_dict()["requests"].items()
        for e in entry["logprob_changes"]
    }


def _negated(value):
    if isinstance(value, str):
        return {"inf": "-inf", "-inf": "inf", "nan": "nan"}[value]
    return -value


@settings(max_examples=60, deadline=None)
@given(pair=perturbed_pairs(), mode=st.sampled_from([Mode.MEGATRON, Mode.APPROXIMATE, Mode.DETERMINISTIC]))
def test_swapping_golden_and_current_only_flips_signs(pair, mode):
    golden, current = pair
    policy = Policy(mode=mode)
    forward, backward = compare(golden, current, policy), compare(current, golden, policy)
    ahead, behind = _changes(forward), _changes(backward)
    assert ahead.keys() == behind.keys()
    for key, (g, c, delta) in ahead.items():
        g_back, c_back, delta_back = behind[key]
        assert (g_back, c_back) == (c, g)
        assert delta_back == _negated(delta) or (delta == 0.0 and delta_back == 0.0)
    assert forward.first_divergences == backward.first_divergences
    assert forward.passed == backward.passed
    for rid, entry in forward.to_dict()["requests"].items():
        swapped = [{**t, "golden": t["current"], "current": t["golden"]} for t in entry["token_changes"]]
        assert backward.to_dict()["requests"][rid]["token_changes"] == swapped


valid_text = json.dumps({"0": {"generated_tokens": [1, 2], "logprobs": [-1.0, -0.5, -0.25], "generated_text": " a"}})
malformed = st.one_of(
    st.integers(0, len(valid_text) - 2).map(lambda n: valid_text[:n].encode()),  # truncated
    st.binary(max_size=40).filter(lambda b: not b.strip().startswith(b"{")),
    st.sampled_from([b"null", b"[]", b"{}", b'"text"', b"1e999", b'{"1": 5}', b'{"0": {"logprobs": {}}}',
                     b'{"0": {"logprobs": [1, "a"]}}', b'{"0": {"generated_tokens": [0.5]}}',
                     b'{"0": {"logprobs": [[1.0]]}}', b"\xef\xbb\xbf", b'{"0": {"generated_text": []}}']),
    st.recursive(st.none() | st.booleans() | st.text(max_size=3),
                 lambda inner: st.lists(inner, max_size=3), max_leaves=5).map(
        lambda v: json.dumps({"0": {"logprobs": [v]}}).encode()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=malformed, side=st.sampled_from(["golden", "current"]))
def test_malformed_input_exits_2_without_traceback(capsys, content, side):
    with tempfile.TemporaryDirectory() as folder:
        good, bad = Path(folder) / "good.json", Path(folder) / "bad.json"
        good.write_text(valid_text)
        bad.write_bytes(content)
        paths = [str(bad), str(good)] if side == "golden" else [str(good), str(bad)]
        rc = cli.main(["compare", *paths])
    err = capsys.readouterr().err
    assert rc == 2, (content, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err
