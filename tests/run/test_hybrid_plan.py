"""Megatron-LM's Mamba hybrid cases as the harness reads and plans them: their model_config.yaml loads unchanged
(a flag without effect given twice, as those files give --init-method-std), the plan carries the layer pattern
the ranks build (rank.hybrid_builder), and a CPU toolchain whose Mamba mixer has no stand-ins refuses them
(exit 4, named). No engine runs here; the suites run them (nox -s logitsmatch -- family)."""

from __future__ import annotations

import shutil

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.flows.run_suite import mamba_refusal
from logitsmatch.run.plan import build_plan, synthetic_checkpoint, tokenizer_spec
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite
from support import TINY_SUITE

HYBRID_TINY = "hybrid_dynamic_inference_tp1_pp1_dp8_tiny"
HYBRID_CASE = "hybrid_dynamic_inference_tp1_pp1_dp8_583m"


def plan_of(project, name: str) -> dict:
    suite = load_suite(project, name)
    tokenizer = tokenizer_spec(suite, project, False, None)
    plan, _ = build_plan(suite, get_platform("cpu"), synthetic_checkpoint(suite, project, tokenizer), project,
                         tokenizer, "127.0.0.1")
    return plan


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


def test_only_a_cpu_toolchain_past_the_stand_ins_refuses_a_hybrid(project):
    hybrid, gpt = load_suite(project, HYBRID_TINY), load_suite(project, TINY_SUITE)
    cpu, gpu = get_platform("cpu"), get_platform("gpu", installed=frozenset(), gpu_count=8)
    assert mamba_refusal(hybrid, cpu, (0, 16, 1)) is None
    assert mamba_refusal(hybrid, cpu, (0, 15, 3)) is None
    refusal = mamba_refusal(hybrid, cpu, (0, 19, 2))
    assert refusal.startswith("--model-provider hybrid: megatron-core 0.19.2's Mamba mixer runs megatron's own Triton")
    assert mamba_refusal(hybrid, gpu, (0, 19, 2)) is None  # real kernels on a GPU
    assert mamba_refusal(gpt, cpu, (0, 19, 2)) is None
