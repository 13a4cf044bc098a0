"""The text at a divergence: from generated_text, else from the suite's tokenizer; a changed prompt is named."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from logitsmatch import cli
from logitsmatch.judge.compare import compare
from logitsmatch.judge.divergence import annotate
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.policy import Policy
from logitsmatch.judge.report import render_markdown, render_terminal
from logitsmatch.vocab import load_decoder
from support import TINY_SUITE, VOCAB, golden_file
from support.documents import make_request

TE27 = Path(__file__).resolve().parents[1] / "data" / "megatron_history" / "te2.7_fp8_logitsmatch"


def test_text_at_the_divergence_from_generated_text(tmp_path, capsys):
    """Megatron-LM's TE 2.7 bump drops " possible" at generated index 20 (tests/data/megatron_history)."""
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    assert cli.main(["compare", str(TE27 / "before.json"), str(TE27 / "after.json"),
                     "--json", str(report), "--junit", str(junit)]) == 1
    expected = ("text: ...'self in the most beautiful way' then golden ' possible. And that this is th', "
                "current '. And that this is the place w' (from generated_text)")
    assert expected in capsys.readouterr().out
    text = json.loads(report.read_text())["requests"]["0"]["first_divergence"]["text"]
    assert text == {"source": "generated_text", "before": "self in the most beautiful way",
                    "golden": " possible. And that this is th", "current": ". And that this is the place w"}
    failure = next(case for case in ET.parse(junit).iter("testcase") if case.get("name") == "generated_tokens")
    assert expected in failure.find("failure").text


def test_the_shipped_tokenizer_decodes_as_megatron_core_did():
    """Every committed tiny golden's generated_text is megatron-core's own detokenization of its tokens."""
    decode = load_decoder(VOCAB)
    golden = load_golden(golden_file(TINY_SUITE))
    requests = [r for r in golden.values() if isinstance(r, dict)]
    assert requests
    for request in requests:
        assert decode(request["generated_tokens"]) == request["generated_text"]
    assert decode([2, 1000 + ord("a")]) == "<special 2>a"


def test_text_at_the_divergence_from_the_tokenizer():
    """Without generated_text the tokens are decoded with the suite's vocabulary, 8 on each side."""
    golden = {rid: dict(r) for rid, r in load_golden(golden_file(TINY_SUITE)).items() if isinstance(r, dict)}
    reference = golden["0"]["generated_text"]
    for request in golden.values():
        del request["generated_text"]
    current = json.loads(json.dumps(golden))
    tokens = current["0"]["generated_tokens"]
    tokens[12] = 1000 + ord("Q")
    result = compare(golden, current, Policy())
    assert result.requests["0"].divergence_text is None  # no generated_text and no tokenizer: nothing to show
    annotate(result, golden, current, load_decoder(VOCAB))
    text = result.requests["0"].divergence_text
    assert text["source"] == "tokenizer" and text["current"].startswith("Q")
    assert text["before"] + text["golden"] in reference and reference.index(text["before"]) > 0
    shown = f"then golden {text['golden']!r}, current {text['current']!r} (from the tokenizer)"
    assert shown in render_terminal(result)
    assert "(from the tokenizer)" in render_markdown(result)


def test_a_changed_prompt_is_named_and_its_positions_are_not_drift():
    golden = {"0": make_request(prompt=(-1.0,) * 29, tokens=tuple(range(1000, 1030)), generated=(-0.5,) * 30)}
    current = {"0": dict(make_request(prompt=(-2.0,) * 127, tokens=tuple(range(1100, 1130)), generated=(-0.7,) * 30),
                         input_prompt="another prompt")}
    result = compare(golden, current, Policy())
    tokens = next(c for c in result.checks if c.metric == "generated_tokens")
    assert tokens.status == "fail" and tokens.message.startswith("prompt differs (30 vs 128 tokens)")
    entry = result.to_dict()["requests"]["0"]
    assert entry["token_changes"] == [] and entry["stats"]["compared"] == 0
    assert entry["prompt_change"]["golden_tokens"] == 30 and entry["prompt_change"]["current_tokens"] == 128
    terminal = render_terminal(result)
    assert "prompt differs in 1 of 1 request;" in terminal.splitlines()[0]
    assert "root['0']['input_prompt']: prompt differs (30 vs 128 tokens)" in terminal
    assert "positions changed" not in terminal and not result.tokens_agree


def test_same_length_prompts_with_different_text_are_named_too():
    golden = {"0": make_request()}
    current = {"0": dict(make_request(), input_prompt="p q r t")}
    result = compare(golden, current, Policy())
    assert not result.passed and result.requests["0"].prompt_change["text"] == "4 vs 4 tokens"


def test_the_same_prompt_text_tokenised_two_ways_is_named_as_different_tokenizers():
    """Megatron's H100 seed golden and a CPU golden: identical input_prompt strings, 88 vs 129 prompt tokens."""
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.report import render_terminal
    from logitsmatch.policy import Policy
    from support import PROJECT, SEED_SUITE

    folder = PROJECT / "golden_values" / SEED_SUITE
    h100 = load_golden(folder / "golden_values_dev_dgx_h100.json")
    cpu = load_golden(folder / "golden_values_cpu_py3.11-torch2.13.0-mcore0.16.1.json")
    assert h100["0"]["input_prompt"] == cpu["0"]["input_prompt"]
    text = render_terminal(compare(h100, cpu, Policy()))
    assert "same prompt text, tokenised to 88 vs 129 tokens: the two sides used different tokenizers" in text
    assert "prompt differs" not in text
    assert "the same prompt text is tokenised differently in 1 of 1 request (different tokenizers)" in text


def test_the_verdict_line_names_lost_requests_even_under_quiet():
    from logitsmatch import log
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.report import render_terminal
    from logitsmatch.policy import Policy
    from support import TINY_SUITE, golden_file

    golden = load_golden(golden_file(TINY_SUITE))
    current = {key: value for key, value in golden.items() if key not in ("0", "2")}
    log.configure(-1)
    try:
        line = render_terminal(compare(golden, current, Policy()))
    finally:
        log.configure(0)
    assert line.count("\n") == 1 and "2 golden requests lost (0, 2)" in line and "2 structural changes" in line


def test_a_side_keeping_a_logprob_past_a_stop_word_is_not_called_a_tokenizer_difference():
    """The tiny stop-words sibling's goldens: 0.16 keeps the stop word's token and one more logprob, 0.17+ trim
    both. The prompts' logprobs agree, so the report names the extra logprob, not different tokenizers."""
    from logitsmatch.judge.compare import compare
    from logitsmatch.judge.golden_io import load_golden
    from logitsmatch.judge.report import render_terminal
    from logitsmatch.policy import Policy
    from support import PROJECT

    folder = PROJECT / "golden_values" / "gpt_dynamic_inference_tp1_pp1_tiny_stop_words"
    old = load_golden(folder / "golden_values_cpu_py3.11-torch2.13.0-mcore0.16.1.json")
    new = load_golden(folder / "golden_values_cpu_py3.12-torch2.14.1-mcore0.19.2.json")
    result = compare(old, new, Policy())
    text = render_terminal(result)
    assert not result.passed
    ended = [rid for rid, pair in result.requests.items() if pair.prompt_change]
    assert ended and all(result.requests[rid].prompt_change["extra_logprobs"] == 1 for rid in ended)
    assert "one side keeps 1 logprob past its prompt and generated tokens" in text
    assert "different tokenizers" not in text and "prompt differs" not in text
