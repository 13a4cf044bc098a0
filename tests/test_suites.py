"""Suite folders: Megatron's format is read as-is, and bad input is one clear error."""

from __future__ import annotations

import shutil

import pytest
import yaml

from logitsmatch.errors import BadInput
from logitsmatch.model_args import FLAGS, classify
from logitsmatch.run.platforms import PLATFORMS
from logitsmatch.suites import load_suite, suite_names
from support import SEED_SUITE, TINY_SUITE


def copy_suite(project, tmp_path, name=TINY_SUITE):
    (tmp_path / "suites").mkdir()
    shutil.copytree(project / "suites" / name, tmp_path / "suites" / name)
    return tmp_path / "suites" / name / "model_config.yaml"


def test_shipped_suites_load(project):
    assert {SEED_SUITE, TINY_SUITE} <= set(suite_names(project))
    seed = load_suite(project, SEED_SUITE)
    assert seed.model_args["--tensor-model-parallel-size"] == 8
    assert seed.model_args["--num-layers"] == 24 and seed.model_args["--hidden-size"] == 1152
    assert seed.model_args["--num-attention-heads"] == 16
    assert seed.model_args["--top_k"] == 1 and seed.model_args["--num-tokens-to-generate"] == 30
    assert seed.prompts[0].startswith("Time travel to 2008")
    assert seed.metrics == ["generated_tokens", "logprobs"]


def test_seed_suite_is_megatrons_file_unchanged(project, megatron_cases):
    ours = (project / "suites" / SEED_SUITE / "model_config.yaml").read_bytes()
    assert ours == (megatron_cases / SEED_SUITE / "model_config.yaml").read_bytes()


def test_every_megatron_sibling_case_has_only_known_flags(megatron_cases):
    for config in megatron_cases.glob("*/model_config.yaml"):
        unknown = set(yaml.safe_load(config.read_text())["MODEL_ARGS"]) - set(FLAGS)
        assert not unknown, f"{config.parent.name}: {sorted(unknown)}"


def test_unknown_flag_is_named(project, tmp_path):
    config = copy_suite(project, tmp_path)
    config.write_text(config.read_text().replace("  --top_k: 1", "  --top_k: 1\n  --frobnicate: 3"))
    with pytest.raises(BadInput, match="--frobnicate"):
        load_suite(tmp_path, TINY_SUITE)


@pytest.mark.parametrize(
    "text, message",
    [
        ("MODE: inference\nMODEL_ARGS: [", "invalid YAML"),
        ("- just a list", "mapping at the top level"),
        ("MODE: training\nMODEL_ARGS: {--top_k: 1}\nMETRICS: []", "MODE must be 'inference'"),
        ("MODE: inference\nMODEL_ARGS: {}\nMETRICS: []", "MODEL_ARGS must be a non-empty mapping"),
        ("MODE: inference\nMODEL_ARGS: {--top_k: 1}\nMETRICS: logprobs", "METRICS must be a list"),
        ("MODE: inference\nSURPRISE: 1\nMODEL_ARGS: {--top_k: 1}\nMETRICS: []", "unknown top-level key"),
        ("MODE: inference\nMODEL_ARGS: {--top_k: 1}\nMETRICS: []\nENV_VARS: {A: [1]}", "ENV_VARS"),
    ],
)
def test_bad_suite_files(project, tmp_path, text, message):
    copy_suite(project, tmp_path).write_text(text)
    with pytest.raises(BadInput, match=message):
        load_suite(tmp_path, TINY_SUITE)


def test_yaml_is_never_executed(project, tmp_path):
    copy_suite(project, tmp_path).write_text("MODE: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(BadInput, match="invalid YAML"):
        load_suite(tmp_path, TINY_SUITE)


def test_unknown_suite(project):
    with pytest.raises(BadInput, match="unknown suite 'nope'"):
        load_suite(project, "nope")


def test_cpu_reports_what_it_cannot_honour_and_gpu_applies_it(project):
    seed = load_suite(project, SEED_SUITE)
    cpu = classify(seed.model_args, PLATFORMS["cpu"].honours, "cpu")
    expected = {
        "--transformer-impl", "--sequence-parallel", "--use-flashinfer-fused-rope", "--bf16",
        "--distributed-backend", "--attention-backend", "--inference-fuse-tp-communication",
    }
    assert expected <= set(cpu.not_applied)
    assert any("not applied on platform cpu" in line for line in cpu.lines("cpu"))
    gpu = classify(seed.model_args, PLATFORMS["dgx_h100"].honours, "dgx_h100")
    assert not gpu.not_applied
    assert expected <= set(gpu.applied)
    assert "--log-interval" in cpu.no_effect and "--log-interval" in gpu.no_effect
