"""judge.top_n: vLLM's top-n rule at a request's first token divergence, and the KL estimate over the shared top-n."""

from __future__ import annotations

import math

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.judge.compare import compare
from logitsmatch.judge.divergence import annotate
from logitsmatch.judge.golden_io import validate_golden
from logitsmatch.judge.report import render_terminal
from logitsmatch.judge.top_n import compare_top_n, describe, shared_support_kl

TEXTS = {10: " a", 11: " b", 12: " c", 13: " d", 14: " e", 20: " x", 21: " y", 22: " z"}


def decode(ids: list[int]) -> str:
    return "".join(TEXTS[i] for i in ids)


def request(tokens: list[int], top_n: list[dict]) -> dict:
    return {"generated_tokens": tokens, "logprobs": [-1.0, *(-0.5 for _ in tokens)], "top_n_logprobs": top_n}


TOP_ABC = {" a": -0.5, " b": -1.5, " c": -2.5}
TOP_BAC = {" b": -0.6, " a": -1.0, " c": -2.4}  # the same three tokens, " b" now the most likely
TOP_XYZ = {" x": -0.4, " y": -1.2, " z": -3.0}


def test_identical_requests_have_no_divergence_and_zero_kl():
    side = request([10, 10], [TOP_ABC, TOP_ABC])
    found = compare_top_n(side, side, None, decode)
    assert found["n"] == 3 and found["at_divergence"] is None
    assert found["kl"] == {"max": 0.0, "at": 0, "mean": 0.0, "positions": 2, "least_shared": 3}


def test_divergence_inside_top_n_reads_each_token_in_the_other_sides_distribution():
    golden = request([10, 10], [TOP_ABC, TOP_ABC])
    current = request([10, 11], [TOP_ABC, TOP_BAC])
    found = compare_top_n(golden, current, 1, decode)
    at = found["at_divergence"]
    assert (at["index"], at["golden_text"], at["current_text"]) == (1, " a", " b")
    assert at["golden_token_in_current_top_n"] is True and at["current_token_in_golden_top_n"] is True
    assert "golden token in the current file's" in at["read"]
    assert found["kl"]["at"] == 1 and found["kl"]["max"] > 0.1  # the two orders of a, b weigh differently


def test_divergence_outside_top_n_is_told_per_side():
    golden = request([10], [TOP_ABC])
    current = request([13], [{" d": -0.3, " a": -1.1, " e": -2.0}])  # golden's " a" in it; " d" not in golden's
    at = compare_top_n(golden, current, 0, decode)["at_divergence"]
    assert at["golden_token_in_current_top_n"] is True
    assert at["current_token_in_golden_top_n"] is False


def test_disjoint_top_n_has_no_kl_and_neither_token_inside():
    golden, current = request([10], [TOP_ABC]), request([20], [TOP_XYZ])
    found = compare_top_n(golden, current, 0, decode)
    assert found["kl"] is None
    assert found["at_divergence"]["golden_token_in_current_top_n"] is False
    assert found["at_divergence"]["current_token_in_golden_top_n"] is False


def test_kl_is_renormalised_over_the_shared_tokens_only():
    # one side's logprobs shifted by a constant (less mass on the shared tokens): the same shape, KL 0
    shifted = {token: value - 2.0 for token, value in TOP_ABC.items()}
    kl, shared = shared_support_kl(TOP_ABC, shifted)
    assert shared == 3 and kl == pytest.approx(0.0, abs=1e-12)
    assert shared_support_kl(TOP_ABC, TOP_XYZ) == (None, 0)
    # tokens only one side has are left out; two shared tokens at log-odds 1 against log-odds 0
    kl, shared = shared_support_kl({" a": -1.0, " b": -2.0, " c": -3.0}, {" a": -1.0, " b": -1.0, " x": -0.1})
    p = [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]
    assert shared == 2 and kl == pytest.approx(sum(pi * math.log(pi / 0.5) for pi in p))


def test_without_a_tokenizer_the_membership_is_unknown_not_guessed():
    golden = request([10], [TOP_ABC])
    current = request([11], [TOP_BAC])
    found = compare_top_n(golden, current, 0, None)
    at = found["at_divergence"]
    assert at["golden_token_in_current_top_n"] is None and at["current_token_in_golden_top_n"] is None
    assert "golden token 10 in current's top-n unknown (no tokenizer), current token 11" in describe(found)


def test_a_comparison_reports_the_rule_and_the_kl_for_a_diverged_request():
    golden = {"0": request([10, 10], [TOP_ABC, TOP_ABC])}
    current = {"0": request([10, 11], [TOP_ABC, TOP_BAC])}
    result = compare(golden, current)
    annotate(result, golden, current, decode)
    entry = result.request_entry("0")["top_n"]
    assert entry["at_divergence"]["current_token_in_golden_top_n"] is True
    text = render_terminal(result)
    assert "golden ' a' in current's top-n yes, current ' b' in golden's top-n yes" in text
    assert "KL(golden||current) over the shared top-3, renormalised" in text


def test_files_without_top_n_have_none():
    side = {"0": {"generated_tokens": [10], "logprobs": [-1.0, -0.5]}}
    result = compare(side, side)
    annotate(result, side, side, decode)
    assert result.requests["0"].top_n is None


@pytest.mark.parametrize("top_n, problem", [
    ({"x": 1}, "top_n_logprobs is an object, expected a list of objects"),
    ([[-0.5]], "top_n_logprobs[0] is a list, expected an object"),
    ([{" a": "high"}], "top_n_logprobs[0][' a'] is a string, expected a number"),
])
def test_a_malformed_top_n_field_is_bad_input_naming_it(top_n, problem):
    with pytest.raises(BadInput, match=problem.replace("[", r"\[").replace("]", r"\]")):
        validate_golden({"0": {"generated_tokens": [10], "top_n_logprobs": top_n}}, "golden")


def test_megatrons_own_top_n_golden_is_read_and_matches_itself(megatron_inference_cases):
    """The H100 golden of Megatron's top_n_logprobs case, in its driver's own format: 30 positions of 5."""
    from logitsmatch.judge.golden_io import load_golden

    folder = next(f for f in megatron_inference_cases if f.name == "gpt_dynamic_inference_tp1_pp1_583m_top_n_logprobs")
    golden = load_golden(folder / "golden_values_dev_dgx_h100.json")
    found = compare_top_n(golden["0"], golden["0"], None, None)
    assert found["n"] == 5 and found["at_divergence"] is None
    assert found["kl"]["positions"] == 30 and found["kl"]["max"] == 0.0
