"""Real TP8 runs: 8 gloo ranks, megatron-core's engine, ZMQ coordinator and client.

These need a toolchain venv (torch + megatron-core), as `nox -s tests` provides.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from logitsmatch.errors import EXIT_DRIFT
from logitsmatch.toolchains import load_toolchains
from support import DEFAULT_TOOLCHAIN, PROJECT, PYPROJECT, TINY_SUITE, VOCAB, golden_file, run_logitsmatch

GOLDEN = golden_file(TINY_SUITE)


def megatron_inference_rule(golden: dict, current: dict) -> None:
    """Megatron-LM's inference comparator rule (test_inference_regular_pipeline.py), as asserts."""
    assert set(current) <= set(golden)
    for rid, request in current.items():
        assert request["generated_tokens"] == golden[rid]["generated_tokens"]
        assert len(request["logprobs"]) == len(golden[rid]["logprobs"])
        for ours, theirs in zip(request["logprobs"], golden[rid]["logprobs"]):
            assert math.isclose(ours, theirs, abs_tol=1e-3)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def tiny_run(results_root):
    completed = run_logitsmatch(
        "run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, env={"LOGITSMATCH_RESULTS": str(results_root)}
    )
    return completed, results_root / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN


def test_tiny_suite_passes_against_committed_golden(tiny_run):
    completed, result_dir = tiny_run
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "8 ranks (gloo)" in out
    assert f"toolchain {DEFAULT_TOOLCHAIN}" in out
    assert "coordinator tcp://127.0.0.1:" in out
    assert "stand-in: flash_attn_varlen_func" in out
    assert "--transformer-impl: not applied on platform cpu" in out
    assert out.count("PASS") >= 1
    provenance = json.loads((result_dir / "result.provenance.json").read_text())
    assert provenance["packages"]["megatron-core"] == load_toolchains(PYPROJECT)[DEFAULT_TOOLCHAIN].megatron_core
    assert provenance["weights"]["source"] == "synthetic"
    assert len(provenance["weights"]["sha256"]) == 64
    assert provenance["stand_ins"] and provenance["network"]["coordinator"].startswith("tcp://127.0.0.1:")


def test_result_satisfies_megatrons_own_rule(tiny_run):
    completed, result_dir = tiny_run
    assert completed.returncode == 0
    current = json.loads((result_dir / "result.json").read_text())
    golden = json.loads(GOLDEN.read_text())
    megatron_inference_rule(golden, current)
    for request in current.values():
        prompt_logprobs = len(request["logprobs"]) - len(request["generated_tokens"])
        assert len(request["generated_tokens"]) == 30 and prompt_logprobs > 0
        assert set(request) == {"input_prompt", "generated_text", "generated_tokens", "latency", "logprobs"}


def test_changed_weight_fails_and_names_the_indices(tiny_run, tmp_path):
    """One output-layer weight moved: the run fails and the report names what moved."""
    completed, _ = tiny_run
    assert completed.returncode == 0
    provenance = json.loads((tiny_run[1] / "result.provenance.json").read_text())
    from logitsmatch.paths import cache_root
    from logitsmatch.run.synthetic_weights import cache_key

    source = cache_root() / "checkpoints" / cache_key(provenance["weights"]["spec"])
    generated = json.loads(GOLDEN.read_text())["0"]["generated_tokens"]
    row = generated[5]  # the 6th generated token of request 0: raise its logit
    hidden = provenance["weights"]["spec"]["architecture"]["hidden_size"]
    perturbed = tmp_path / "perturbed"
    subprocess.run(
        [sys.executable, str(PROJECT / "tests" / "support" / "perturb_checkpoint.py"), str(source), str(perturbed),
         "output_layer.weight", str(row * hidden), "0.5"],
        check=True, capture_output=True, timeout=300,
    )
    run = run_logitsmatch(
        "run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--checkpoint", str(perturbed),
        "--tokenizer-model", str(VOCAB), env={"LOGITSMATCH_RESULTS": str(tmp_path / "results")},
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "FAIL" in run.stdout
    report = json.loads((tmp_path / "results" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN / "report.json").read_text())
    assert report["verdict"] == "fail"
    changes = report["requests"]["0"]["logprob_changes"]
    assert changes, "the changed logit must show up as out-of-tolerance logprobs"
    assert all({"index", "part", "golden", "current", "delta"} <= set(change) for change in changes)


def test_a_run_that_lost_requests_fails_the_main_jobs_verdict(tiny_run, tmp_path, capsys):
    """The real result with 3 of its 4 requests removed: the verdict the main job prints fails and names them."""
    from logitsmatch.judge.verdict import judge_against_golden
    from logitsmatch.suites import load_suite

    completed, result_dir = tiny_run
    assert completed.returncode == 0
    current = json.loads((result_dir / "result.json").read_text())
    assert sorted(current) == ["0", "1", "2", "3"]
    lost = tmp_path / "result.json"
    lost.write_text(json.dumps({"0": current["0"]}))
    suite = load_suite(PROJECT, TINY_SUITE)
    assert judge_against_golden(suite, lost, GOLDEN, DEFAULT_TOOLCHAIN) == EXIT_DRIFT
    out = capsys.readouterr().out
    assert out.startswith("[logitsmatch] golden:") or "FAIL" in out
    assert "current lacks 3 golden request id(s): 1, 2, 3" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "fail"
    assert [c["request"] for c in report["structural_changes"] if c["kind"] == "missing_request"] == ["1", "2", "3"]
    cli = run_logitsmatch("compare", str(GOLDEN), str(lost))
    assert cli.returncode == 1 and "current lacks 3 golden request id(s): 1, 2, 3" in cli.stdout
