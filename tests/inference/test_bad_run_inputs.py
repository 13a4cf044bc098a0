"""Bad input to `logitsmatch run` through the real CLI: one stderr line, a documented exit code, no traceback.

Each case runs ``python -m logitsmatch run ...`` in a toolchain venv as a user would; none starts ranks:
every problem (an unknown suite or toolchain, broken suite files, a bad timeout, a missing, garbage,
truncated or foreign checkpoint, a tokenizer path that is a folder) is caught before the launch.
"""

from __future__ import annotations

import json
import shutil

import pytest

from support import (
    PROJECT,
    TINY_SUITE,
    VOCAB,
    assert_one_line,
    installed_toolchain,
    run_logitsmatch,
)

# --- run (bad input is caught before any rank starts) -------------------------------------------


@pytest.fixture
def toolchain():
    name = installed_toolchain()
    if name is None:
        pytest.fail("this venv matches no toolchain in pyproject.toml")
    return name


@pytest.fixture
def scratch_project(tmp_path):
    """A copy of the project's suite, model configs and toolchains that a test may break."""
    root = tmp_path / "project"
    (root / "suites").mkdir(parents=True)
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "model_configs", root / "model_configs")
    shutil.copytree(PROJECT / "suites" / TINY_SUITE, root / "suites" / TINY_SUITE)
    return root


def run_in(project, tmp_path, *args):
    env = {"LOGITSMATCH_ROOT": str(project), "LOGITSMATCH_RESULTS": str(tmp_path / "results")}
    return run_logitsmatch(*args, env=env, timeout=300)


def test_unknown_suite_and_toolchain(tmp_path, toolchain):
    env = {"LOGITSMATCH_RESULTS": str(tmp_path / "results")}
    assert_one_line(run_logitsmatch("run", "no_such_suite", "--toolchain", toolchain, env=env), 2, "unknown suite")
    assert_one_line(run_logitsmatch("run", TINY_SUITE, "--toolchain", "py0.0-nope", env=env), 2, "unknown toolchain")


@pytest.mark.parametrize(
    "file, old, new, fragment",
    [
        ("model_config.yaml", "MODE: inference", "MODE: inference\nMODEL_ARGS: [", "invalid YAML"),
        ("model_config.yaml", "  --top_k: 1", "  --top_k: 1\n  --frobnicate: 3", "--frobnicate is not understood"),
        ("model_config.yaml", "  --top_k: 1", "  --top_k: [1]", "--top_k must be an integer"),
        ("model_config.yaml", "  --tensor-model-parallel-size: 8", "  --tensor-model-parallel-size: 0", ">= 1"),
        ("model_config.yaml", "ENV_VARS:", "ENV_VARS:\n  1: x", "ENV_VARS"),
        ("model_config.yaml", "MODE: inference", "MODE: !!python/object/apply:os.system ['true']", "invalid YAML"),
        ("logitsmatch.yaml", "timeout_s: 300", "timeout_s: .nan", "timeout_s must be a positive number"),
        ("logitsmatch.yaml", "timeout_s: 300", "timeout_s: .inf", "timeout_s must be a positive number"),
        ("logitsmatch.yaml", "  seed: 1234", "  seed: [1]", "seed must be an integer"),
        ("logitsmatch.yaml", "tokenizer_model: model_configs/tokenizer/logitsmatch-bpe-2048.vocab.json",
         "tokenizer_model: model_configs", "is a directory"),
    ],
    ids=["bad YAML", "unknown flag", "wrong-type value", "zero TP", "env var name", "unsafe YAML tag",
         "NaN timeout", "inf timeout", "seed type", "tokenizer is a dir"],
)
def test_bad_suite_files(scratch_project, tmp_path, toolchain, file, old, new, fragment):
    path = scratch_project / "suites" / TINY_SUITE / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    assert_one_line(run_in(scratch_project, tmp_path, "run", TINY_SUITE, "--toolchain", toolchain), 2, fragment)


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_bad_timeout(tmp_path, toolchain, value):
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, f"--timeout={value}",
                                env={"LOGITSMATCH_RESULTS": str(tmp_path / "r")})
    assert_one_line(completed, 2, "--timeout must be a positive number")


def test_checkpoint_that_does_not_exist(tmp_path, toolchain):
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, "--checkpoint", str(tmp_path / "nope"),
                                "--tokenizer-model", str(VOCAB), env={"LOGITSMATCH_RESULTS": str(tmp_path / "r")})
    assert_one_line(completed, 2, "does not exist")


def fake_checkpoint(root, common: bytes | None = None, arch_change: dict | None = None):
    """metadata.json + common.pt laid out as Megatron saves them (no tensor shards: never reached)."""
    iteration = root / "iter_0000001"
    iteration.mkdir(parents=True)
    (root / "latest_checkpointed_iteration.txt").write_text("1")
    (iteration / "metadata.json").write_text(
        json.dumps(
            {
                "sharded_backend": "torch_dist",
                "sharded_backend_version": 1,
                "common_backend": "torch",
                "common_backend_version": 1,
            }
        )
    )
    if common is not None:
        (iteration / "common.pt").write_bytes(common)
        return root
    import torch
    import yaml

    from logitsmatch.checkpoint_args import args_namespace

    arch = {**yaml.safe_load((PROJECT / "model_configs" / "tiny_gpt.yaml").read_text()), **(arch_change or {})}
    torch.save({"args": args_namespace(arch, 3072, 1), "checkpoint_version": 3.0}, iteration / "common.pt")
    return root


def test_garbage_and_truncated_checkpoints(tmp_path, toolchain):
    env = {"LOGITSMATCH_RESULTS": str(tmp_path / "r")}
    garbage = fake_checkpoint(tmp_path / "garbage", common=bytes(range(256)) * 4)
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, "--checkpoint", str(garbage),
                                "--tokenizer-model", str(VOCAB), env=env)
    assert_one_line(completed, 2, "cannot read its common state")
    good = fake_checkpoint(tmp_path / "good")
    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    common = truncated / "iter_0000001" / "common.pt"
    common.write_bytes(common.read_bytes()[:100])
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, "--checkpoint", str(truncated),
                                "--tokenizer-model", str(VOCAB), env=env)
    assert_one_line(completed, 2, "cannot read its common state")


def test_checkpoint_with_another_architecture(tmp_path, toolchain):
    """--checkpoint with 3 layers against a suite that says --num-layers 2: plan.check_shape refuses it."""
    other = fake_checkpoint(tmp_path / "three_layers", arch_change={"num_layers": 3})
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, "--checkpoint", str(other),
                                "--tokenizer-model", str(VOCAB), env={"LOGITSMATCH_RESULTS": str(tmp_path / "r")})
    assert_one_line(completed, 2, "--num-layers 2 but the checkpoint has num_layers=3")


def test_tokenizer_model_that_is_a_directory(tmp_path, toolchain):
    completed = run_logitsmatch("run", TINY_SUITE, "--toolchain", toolchain, "--checkpoint",
                                str(fake_checkpoint(tmp_path / "ckpt")), "--tokenizer-model", str(tmp_path),
                                env={"LOGITSMATCH_RESULTS": str(tmp_path / "r")})
    assert_one_line(completed, 2, "is a directory")
