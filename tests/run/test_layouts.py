"""Parallel layouts: names, Megatron's implicit DP, what a model allows, what each release can run."""

from __future__ import annotations

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.layouts import Layout, of_suite, parse, parse_version, records_routing, routing_note, unsupported
from logitsmatch.suites import load_architecture, load_suite, suite_names

# The family's cases: name -> (layout name, engines). DP is never written in MODEL_ARGS.
FAMILY = {
    "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq": ("tp8", 1),
    "gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq": ("pp8", 1),
    "gpt_dynamic_inference_tp2_pp2_dp2_583m_logitsmatch_zmq": ("tp2pp2dp2", 2),
    "gpt_dynamic_inference_tp1_pp1_dp8_583m_logitsmatch_zmq": ("dp8", 8),
    "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq": ("tp4dp2ep8etp1", 2),
}


@pytest.mark.parametrize("case, expected", FAMILY.items())
def test_each_case_and_its_tiny_sibling_run_the_layout_its_name_states(project, case, expected):
    for name in (case, case.replace("_583m_", "_tiny_").replace("_16B_", "_tiny_")):
        suite = load_suite(project, name)
        layout = of_suite(suite.model_args, suite.world_size, name)
        assert (layout.name, layout.data, layout.world_size) == (*expected, 8), name
        layout.check(load_architecture(project, suite.synthetic_model), name)


def test_every_shipped_suite_has_a_valid_layout(project):
    names = suite_names(project)
    assert names, "no shipped suites"
    for name in names:
        suite = load_suite(project, name)
        of_suite(suite.model_args, suite.world_size, name).check(
            load_architecture(project, suite.synthetic_model), name
        )


@pytest.mark.parametrize(
    "text, layout, name",
    [
        ("tp8", Layout(8), "tp8"),
        ("pp8", Layout(1, 8), "pp8"),
        ("tp2pp2dp2", Layout(2, 2, 2), "tp2pp2dp2"),
        ("dp8", Layout(1, 1, 8), "dp8"),
        ("tp1", Layout(), "tp1"),
        ("tp1pp1dp1", Layout(), "tp1"),
        ("dp2tp4ep8etp1", Layout(4, 1, 2, 8, 1), "tp4dp2ep8etp1"),
        ("tp4ep4etp4", Layout(4, 1, 1, 4, 4), "tp4ep4"),
    ],
)
def test_parse_and_canonical_names(text, layout, name):
    assert parse(text) == layout
    assert parse(text).name == name
    assert parse(name) == parse(text)


@pytest.mark.parametrize("text", ["", "tp", "tp0", "tp2tp2", "tp2 pp2", "xp2", "tp2x", "pp-1", "TP2"])
def test_bad_layout_names_are_one_clear_error(text):
    with pytest.raises(BadInput, match="is not understood"):
        parse(text)


def test_data_parallel_is_what_the_world_leaves():
    assert of_suite({"--tensor-model-parallel-size": 2, "--pipeline-model-parallel-size": 2}, 8, "x").data == 2
    assert of_suite({}, 8, "x") == Layout(1, 1, 8)
    assert of_suite({"--tensor-model-parallel-size": 8}, 1 * 8, "x") == Layout(8)
    with pytest.raises(BadInput, match="world size 8 is not a multiple of TP 3 x PP 1"):
        of_suite({"--tensor-model-parallel-size": 3}, 8, "x")


def test_what_a_model_allows(project):
    tiny8 = load_architecture(project, "tiny_gpt_8l")
    moe = load_architecture(project, "tiny_moe")
    Layout(1, 8).check(tiny8, "s")
    with pytest.raises(BadInput, match="2 layers do not split evenly over 8 pipeline stages"):
        Layout(1, 8).check(load_architecture(project, "tiny_gpt"), "s")
    with pytest.raises(BadInput, match="num_attention_heads=8 is not divisible by tensor parallel size 3"):
        Layout(3).check(tiny8, "s")
    with pytest.raises(BadInput, match="splits experts but the model has none"):
        Layout(1, 1, 8, 8).check(tiny8, "s")
    with pytest.raises(BadInput, match="ETP 1 x EP 8 does not divide the 4 ranks"):
        Layout(4, 1, 1, 8, 1).check(moe, "s")
    with pytest.raises(BadInput, match="64 experts do not split evenly over expert parallel size 3"):
        Layout(1, 1, 3, 3, 1).check(moe, "s")


@pytest.mark.parametrize("broken, message", [
    ({"num_attention_heads": 8}, "names no num_layers"),
    ({"num_layers": "eight"}, "num_layers='eight' must be a positive integer"),
    ({"num_layers": 8, "num_attention_heads": 0}, "num_attention_heads=0 must be a positive integer"),
    ({"num_layers": 8, "num_experts": True}, "num_experts=True must be a positive integer"),
])
def test_an_architecture_without_usable_sizes_is_one_clear_error(broken, message):
    """What a hand-edited (or fuzzed) model_configs/<model>.yaml can hold: a refusal, not a KeyError."""
    with pytest.raises(BadInput, match=message):
        Layout(1, 8).check(broken, "s")


def test_experts_span_engines_only_when_the_ep_group_leaves_one_engine():
    assert parse("tp4dp2ep8etp1").experts_span_engines  # the 16B case: EP over both TP4 engines
    assert not parse("tp8ep8etp1").experts_span_engines  # one TP8 engine holds the whole EP group
    assert not parse("tp4dp2ep4etp1").experts_span_engines
    assert not parse("tp1").experts_span_engines


def test_releases_that_cannot_run_a_layout_say_what_is_missing():
    v015 = parse_version("0.15.3")
    pp = unsupported(parse("tp2pp2dp2"), v015)
    assert pp.startswith("megatron-core 0.15.3 cannot run pipeline parallel (PP2)") and "needs 0.16+" in pp
    ep = unsupported(parse("tp4dp2ep8etp1"), v015)
    assert ep.startswith("megatron-core 0.15.3 cannot run expert parallel across engines") and "needs 0.16+" in ep
    assert unsupported(parse("dp8"), v015) is None and unsupported(parse("tp8ep8etp1"), v015) is None
    for release in ("0.16.0", "0.17.1", "0.19.2"):
        assert unsupported(parse("pp8"), parse_version(release)) is None
        assert unsupported(parse("tp4dp2ep8etp1"), parse_version(release)) is None
    assert not records_routing(parse_version("0.16.1")) and records_routing(parse_version("0.17.0rc1"))
    assert "not recorded by megatron-core 0.16.1" in routing_note(parse_version("0.16.1"))
