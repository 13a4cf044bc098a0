"""--top-n-logprobs and --stop-words: megatron-core SamplingParams fields the plan carries, as Megatron's driver reads
them, and a release without the field refuses the suite naming it (exit 4). No engine runs here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from logitsmatch.errors import BadInput, Unsupported
from logitsmatch.flows.run_suite import feature_refusal
from logitsmatch.judge.golden_io import request_ids
from logitsmatch.run.plan import STATIC_ENGINE, build_plan, stop_words, synthetic_checkpoint, tokenizer_spec
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite
from logitsmatch.vocab import load_decoder
from support import PROJECT, TINY_SUITE, VOCAB, golden_file
from support.parity_cases import family_toolchains
from support.plans import plan_of

TOP_N_TINY = "gpt_dynamic_inference_tp1_pp1_tiny_top_n_logprobs"
STOP_TINY = "gpt_dynamic_inference_tp1_pp1_tiny_stop_words"
STOP_583M = "gpt_dynamic_inference_tp1_pp1_583m_stop_words"


def test_the_plan_carries_top_n_and_stop_words_only_where_the_suite_asks(project):
    assert plan_of(project, TOP_N_TINY)["sampling"]["top_n_logprobs"] == 5
    assert plan_of(project, STOP_583M)["sampling"]["stop_words"] == ["the"]  # '"the"': the quotes are the shell's
    assert plan_of(project, STOP_TINY)["sampling"]["stop_words"] == ["the", " streets", " city"]
    plain = plan_of(project, TINY_SUITE)["sampling"]
    assert plain["top_n_logprobs"] == 0 and plain["stop_words"] is None


@pytest.mark.parametrize("value, words", [
    ('"the"', ["the"]),
    ('"\\n\\n" "END" "###"', ["\\n\\n", "END", "###"]),  # Megatron's help example: the shell keeps the backslashes
    ("stop", ["stop"]),
])
def test_stop_words_are_the_shell_words_of_the_value(value, words):
    assert stop_words({"--stop-words": value}) == words


@pytest.mark.parametrize("value, problem", [('"the', "not shell words"), ("''", "names no word")])
def test_unreadable_stop_words_are_bad_input(value, problem):
    with pytest.raises(BadInput, match=problem):
        stop_words({"--stop-words": value})


class Release:
    """An adapter whose SamplingParams lacks ``missing``."""

    def __init__(self, *missing: str):
        self.missing = missing

    def lacks_sampling_fields(self, names) -> list[str]:
        return sorted(set(names) & set(self.missing))


def test_a_release_without_the_sampling_field_refuses_naming_the_flag(project):
    top_n, stop, plain = (load_suite(project, name) for name in (TOP_N_TINY, STOP_TINY, TINY_SUITE))
    assert feature_refusal(Release("top_n_logprobs"), top_n, (0, 15, 3)) == (
        "--top-n-logprobs: megatron-core 0.15.3's SamplingParams has no top_n_logprobs")
    assert feature_refusal(Release("stop_words"), stop, (0, 15, 3)) == (
        "--stop-words: megatron-core 0.15.3's SamplingParams has no stop_words")
    assert feature_refusal(Release(), top_n, (0, 16, 1)) is None
    assert feature_refusal(Release("top_n_logprobs", "stop_words"), plain, (0, 15, 3)) is None


@pytest.mark.parametrize("flag, value", [("--top-n-logprobs", 5), ("--stop-words", '"the"')])
def test_the_static_engine_refuses_what_only_the_dynamic_engine_is_given(project, flag, value):
    suite = load_suite(project, TINY_SUITE)
    suite = dataclasses.replace(suite, model_args={**suite.model_args, STATIC_ENGINE: True, flag: value})
    tokenizer = tokenizer_spec(suite, project, False, None)
    with pytest.raises(Unsupported, match="dynamic engine only here, not the static engine"):
        build_plan(suite, get_platform("cpu"), synthetic_checkpoint(suite, project, tokenizer), project, tokenizer,
                   "127.0.0.1")



def stop_endings(tokens: list[int], words: list[str], decode) -> list[tuple[int, str]]:
    """(generated index, stop word) for every index where the tokens so far end with the tokens of a stop word
    (compared as text: each of the tiny sibling's stop words is one vocabulary entry, as megatron-core
    tokenizes it alone)."""
    return [(index, word) for index in range(len(tokens)) for word in words
            if any(decode(tokens[index + 1 - k: index + 1]) == word for k in range(1, min(index + 1, len(word)) + 1))]


# Where the tiny sibling's requests meet a stop word (request id -> generated index of the word's token, word);
# the others run to --num-tokens-to-generate.
STOPPED = {"0": (6, " streets"), "3": (9, " city")}
# megatron-core 0.16 keeps the stop word's token (and one logprob more than prompt + generated tokens); 0.17+
# trim it from the result unless SamplingParams.detokenize_stop_sequence (Megatron-LM 35d5c653e3, "Patch EOD
# out of inference results").
KEEPS_THE_STOP_WORD = {"py3.11-torch2.13.0-mcore0.16.1": True, "py3.12-torch2.14.1-mcore0.19.2": False}



@pytest.mark.parametrize("toolchain", family_toolchains(PROJECT / "pyproject.toml"))
def test_the_tiny_siblings_golden_has_requests_ended_by_a_stop_word(project, toolchain):
    """The committed golden: requests stop at their first stop word and nowhere else; the others run their
    100 tokens. The same prompts on the same tiny model without stop words (the top-n sibling's golden, greedy
    too) generate the same tokens up to the word and then the word itself: the request stopped because of it.
    Where the release trims the word, the request ends just before it."""
    suite = load_suite(project, STOP_TINY)
    words, budget = stop_words(suite.model_args), int(suite.model_args["--num-tokens-to-generate"])
    golden = json.loads(golden_file(STOP_TINY, toolchain).read_text())
    unstopped = json.loads(golden_file(TOP_N_TINY, toolchain).read_text())
    decode, keeps = load_decoder(VOCAB), KEEPS_THE_STOP_WORD[toolchain]
    for rid in request_ids(golden):
        tokens, logprobs = golden[rid]["generated_tokens"], golden[rid]["logprobs"]
        prompt_logprobs = len(unstopped[rid]["logprobs"]) - len(unstopped[rid]["generated_tokens"])
        endings = stop_endings(tokens, words, decode)
        if rid not in STOPPED:
            assert len(tokens) == budget and endings == [], f"request {rid}: {len(tokens)} tokens, stops {endings}"
            assert len(logprobs) == prompt_logprobs + budget
            continue
        index, word = STOPPED[rid]
        assert decode(unstopped[rid]["generated_tokens"][index: index + 1]) == word
        assert tokens[:index] == unstopped[rid]["generated_tokens"][:index]
        assert endings == ([(index, word)] if keeps else []), f"request {rid}: stop words at {endings}"
        assert len(tokens) == index + keeps
        assert len(logprobs) == prompt_logprobs + len(tokens) + keeps  # 0.16: one logprob for the finishing step
        assert logprobs[:prompt_logprobs + index] == unstopped[rid]["logprobs"][:prompt_logprobs + index]


@pytest.mark.parametrize("toolchain", family_toolchains(PROJECT / "pyproject.toml"))
def test_the_top_n_goldens_hold_each_positions_top_n_aligned_with_its_token(project, toolchain):
    """megatron-core's top-n as the result keeps it: one {token text: logprob} per generated position (and per
    prompt position after the first), n entries or fewer: two ids of one text share a key, which keeps the
    logprob of the id megatron-core wrote last (U+FFFD for partial UTF-8). Greedy decoding (--top_k 1) picks the
    most likely token, so the logprob the result keeps for it is at least every entry's, and where no key is
    shared it is its own text's entry."""
    decode = load_decoder(VOCAB)
    for suite in (TOP_N_TINY, "gpt_dynamic_inference_tp1_pp1_583m_top_n_logprobs"):
        n = int(load_suite(project, suite).model_args["--top-n-logprobs"])
        golden = json.loads(golden_file(suite, toolchain).read_text())
        for rid in request_ids(golden):
            request = golden[rid]
            tokens, top_n = request["generated_tokens"], request["top_n_logprobs"]
            prompt = len(request["logprobs"]) - len(tokens)
            assert len(top_n) == len(tokens) and len(request["prompt_top_n_logprobs"]) == prompt
            for index, (token, entry) in enumerate(zip(tokens, top_n)):
                kept, text = request["logprobs"][prompt + index], decode([token])
                assert 0 < len(entry) <= n and text in entry and kept >= max(entry.values()), (rid, index)
                if len(entry) == n:
                    assert entry[text] == kept, (rid, index)
