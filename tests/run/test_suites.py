"""Suite folders: Megatron's format is read as-is, and bad input is one clear error."""

from __future__ import annotations

import shutil

import pytest
import yaml

from logitsmatch.cli import main as cli_main
from logitsmatch.errors import EXIT_BAD_INPUT, BadInput
from logitsmatch.model_args import FLAGS, classify
from logitsmatch.policy import Policy
from logitsmatch.run.platforms import PLATFORMS
from logitsmatch.suites import load_suite, suite_names
from support import MOE_EP8_CASE, SEED_SUITE, TINY_SUITE


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


def test_every_megatron_sibling_case_has_only_known_flags(megatron_case_folders):
    for case in megatron_case_folders:
        unknown = set(yaml.safe_load((case / "model_config.yaml").read_text())["MODEL_ARGS"]) - set(FLAGS)
        assert not unknown, f"{case.name}: {sorted(unknown)}"


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


# Megatron-LM's case files, byte for byte: the git blob id of each model_config.yaml at
# NVIDIA/Megatron-LM commit d98e8a64dd
# (git rev-parse d98e8a64dd:tests/functional_tests/test_cases/<dir>/<case>/model_config.yaml).
MEGATRON_COPIES = {
    "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq": "e34e63ec4c0b600e6103d65df01b34e9a0a5e776",
    "gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq": "3fe997dd46ba18c53e29417d63470414581cd402",
    "gpt_dynamic_inference_tp2_pp2_dp2_583m_logitsmatch_zmq": "a3976951850f6f9f2391398d6143d5938efccf88",
    "gpt_dynamic_inference_tp1_pp1_dp8_583m_logitsmatch_zmq": "dea5eec83dc0b5b6a69a9695debe2d4bfd295ab1",
    "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq": "b05134ba37d3588c6b81d44ef127bf13374f8775",
}


def git_blob_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_family_suites_are_megatrons_files_unchanged(project):
    for case, blob in MEGATRON_COPIES.items():
        data = (project / "suites" / case / "model_config.yaml").read_bytes()
        assert git_blob_id(data) == blob, case
        description = load_suite(project, case).folder.joinpath("logitsmatch.yaml").read_text()
        assert "d98e8a64dd" in description and "LICENSE" in description, case


def test_family_gpt_cases_match_the_shared_copies(project, megatron_cases):
    """Every shipped suite with a copy in Megatron's case folders is that copy, the MoE EP8 case included."""
    shared = {name for name in suite_names(project) if (megatron_cases / name / "model_config.yaml").is_file()}
    assert set(MEGATRON_COPIES) | {SEED_SUITE, MOE_EP8_CASE} <= shared
    for case in sorted(shared):
        ours = (project / "suites" / case / "model_config.yaml").read_bytes()
        assert ours == (megatron_cases / case / "model_config.yaml").read_bytes(), case


def test_tiny_siblings_keep_their_cases_flags_but_the_shape_and_prompts(project):
    shape = {"--num-layers", "--hidden-size", "--num-attention-heads", "--ffn-hidden-size", "--kv-channels",
             "--moe-ffn-hidden-size", "--moe-shared-expert-intermediate-size", "--prompts"}
    for case in MEGATRON_COPIES:
        tiny = case.replace("_583m_", "_tiny_").replace("_16B_", "_tiny_")
        ours, theirs = load_suite(project, tiny), load_suite(project, case)
        assert set(ours.model_args) == set(theirs.model_args), tiny
        assert {flag for flag in ours.model_args if ours.model_args[flag] != theirs.model_args[flag]} <= shape, tiny
        assert ours.metrics == theirs.metrics and ours.env_vars == theirs.env_vars


def _append(text: str):
    return lambda sidecar: sidecar + text


def _under_synthetic_checkpoint(text: str):
    return lambda sidecar: sidecar.replace("  seed: 1234\n", "  seed: 1234\n" + text)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_append("world_size: 0\n"), "world_size must be a positive integer"),
        (_append("world_size: eight\n"), "world_size must be a positive integer"),
        (_append("world_size: true\n"), "world_size must be a positive integer"),
        (_under_synthetic_checkpoint("  scaled_down: 3\n"), "scaled_down must say why"),
        (_under_synthetic_checkpoint("  scaled_down: ' '\n"), "scaled_down must say why"),
        (_under_synthetic_checkpoint("  layers: 3\n"), "unknown key synthetic_checkpoint.layers"),
        (_append("driver: offline\n"), "driver must be one of offline_inference, got 'offline'"),
        (_append("driver: [offline_inference]\n"), r"driver must be one of offline_inference, got \["),
    ],
)
def test_bad_sidecar_keys(project, tmp_path, edit, message):
    sidecar = copy_suite(project, tmp_path).with_name("logitsmatch.yaml")
    sidecar.write_text(edit(sidecar.read_text()))
    with pytest.raises(BadInput, match=message):
        load_suite(tmp_path, TINY_SUITE)


@pytest.mark.parametrize(
    "block, message",
    [
        ("comparison: [mode]\n", "comparison must be a mapping"),
        ("comparison:\n  tolerance: 1\n", "comparison: unknown key"),
        ("comparison:\n  mode: fuzzy\n", "unknown comparison mode 'fuzzy'"),
        ("comparison:\n  mode: deterministic\n  abs_tol: 1.0e-3\n", "bit-exact"),
        ("comparison:\n  abs_tol: -1\n", "abs_tol must be a finite number >= 0"),
    ],
)
def test_a_bad_comparison_block_is_refused_when_the_suite_loads(project, tmp_path, block, message):
    sidecar = copy_suite(project, tmp_path).with_name("logitsmatch.yaml")
    text = sidecar.read_text()
    sidecar.write_text(text[: text.index("comparison:")] + block)
    with pytest.raises(BadInput, match=message):
        load_suite(tmp_path, TINY_SUITE)


def test_the_suites_policy_is_built_at_load(project):
    suite = load_suite(project, TINY_SUITE)
    assert suite.policy == Policy.from_suite(suite.metrics, {"mode": "megatron", "abs_tol": 1.0e-3})


def test_a_bad_comparison_block_stops_a_command_before_it_runs(project, tmp_path, monkeypatch, capsys):
    """One line, exit 2, before the command reads a golden or starts a rank."""
    sidecar = copy_suite(project, tmp_path).with_name("logitsmatch.yaml")
    sidecar.write_text(sidecar.read_text().replace("mode: megatron", "mode: fuzzy"))
    shutil.copy(project / "pyproject.toml", tmp_path / "pyproject.toml")
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(tmp_path))
    code = cli_main(["matrix", "--suite", TINY_SUITE, "--source", "goldens", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and "unknown comparison mode 'fuzzy'" in err and TINY_SUITE in err
