"""Megatron-LM's Mamba hybrid cases as the harness reads and plans them: their model_config.yaml loads unchanged
(a flag without effect given twice, as those files give --init-method-std), the plan carries the layer pattern
the ranks build (rank.hybrid_builder) and the Mamba states' dtypes, and a release that cannot keep the states in
the dtype asked for refuses the suite (exit 4, named). No engine runs here; the suites run them
(nox -s logitsmatch -- family)."""

from __future__ import annotations

import shutil

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.flows.run_suite import mamba_states_refusal
from logitsmatch.run.plan import mamba_states_dtype
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite
from support import TINY_SUITE
from support.plans import plan_of

HYBRID_TINY = "hybrid_dynamic_inference_tp1_pp1_dp8_tiny"
HYBRID_CASE = "hybrid_dynamic_inference_tp1_pp1_dp8_583m"


def test_the_case_file_gives_init_method_std_twice_and_loads_with_the_last(project):
    text = (project / "suites" / HYBRID_CASE / "model_config.yaml").read_text()
    assert text.count("--init-method-std:") == 2
    assert load_suite(project, HYBRID_CASE).model_args["--init-method-std"] == 0.014  # Megatron's reader: the last


def test_a_flag_with_effect_given_twice_is_still_refused(project, tmp_path):
    suites = tmp_path / "suites"
    shutil.copytree(project / "suites" / HYBRID_TINY, suites / HYBRID_TINY)
    config = suites / HYBRID_TINY / "model_config.yaml"
    twice = "  --hidden-size: 128\n  --hidden-size: 64\n"
    config.write_text(config.read_text().replace("  --hidden-size: 128\n", twice))
    with pytest.raises(BadInput, match="duplicate key '--hidden-size'"):
        load_suite(tmp_path, HYBRID_TINY)


@pytest.mark.parametrize("name", [HYBRID_TINY, HYBRID_CASE])
def test_the_plan_carries_the_hybrid_layout_the_ranks_build(project, name):
    arch = plan_of(project, name)["architecture"]
    pattern = load_suite(project, name).model_args["--hybrid-layer-pattern"]
    assert arch["model_provider"] == "hybrid" and arch["hybrid_layer_pattern"] == pattern
    assert arch["num_layers"] == len(pattern)


def test_a_gpt_plan_has_no_hybrid_layout(project):
    assert "hybrid_layer_pattern" not in plan_of(project, TINY_SUITE)["architecture"]


BF16_STATES_TINY = "hybrid_dynamic_inference_tp1_pp1_dp8_tiny_mamba_bf16_states"


def test_the_plan_keeps_the_states_in_the_dtypes_the_suite_asks_for(project):
    assert plan_of(project, HYBRID_TINY)["inference"]["mamba_states_dtype"] == {"conv": "float32", "ssm": "float32"}
    assert plan_of(project, BF16_STATES_TINY)["inference"]["mamba_states_dtype"] == {
        "conv": "bfloat16", "ssm": "bfloat16"}
    assert mamba_states_dtype({}, "bfloat16") == {"conv": "bfloat16", "ssm": "bfloat16"}  # Megatron's default
    with pytest.raises(BadInput, match="--mamba-inference-ssm-states-dtype 'fp8' is not one of fp32, bf16, fp16"):
        mamba_states_dtype({"--mamba-inference-ssm-states-dtype": "fp8"}, "float32")


def test_a_release_without_a_states_dtype_refuses_states_unlike_the_parameters(project):
    bf16_states, fp32_states = load_suite(project, BF16_STATES_TINY), load_suite(project, HYBRID_TINY)
    cpu = get_platform("cpu")
    assert mamba_states_refusal(bf16_states, cpu, (0, 16, 1)) == (
        "--mamba-inference-conv-states-dtype bf16, --mamba-inference-ssm-states-dtype bf16: megatron-core 0.16.1 "
        "keeps the Mamba states in the parameters' dtype (float32); separate states dtypes arrive in megatron-core "
        "0.17")
    assert mamba_states_refusal(bf16_states, cpu, (0, 17, 1)) is None
    assert mamba_states_refusal(fp32_states, cpu, (0, 16, 1)) is None  # fp32 states of an fp32 run: what 0.16 does
    assert mamba_states_refusal(load_suite(project, TINY_SUITE), cpu, (0, 16, 1)) is None
