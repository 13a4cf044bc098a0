"""The case family for real: data-parallel engines behind one coordinator, experts and their routing.

8 gloo ranks each (the fast siblings); the routing test runs in the newest toolchain whose
megatron-core records ``routing_indices`` (0.17+), in that toolchain's venv.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from support import (
    DEFAULT_TOOLCHAIN,
    PROJECT,
    ROUTING_TOOLCHAIN,
    VOCAB,
    assert_one_line,
    golden_file,
    require_toolchain_venv,
    run_logitsmatch,
)

DP_SIBLINGS = {  # suite -> engines
    "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq": 8,
    "gpt_dynamic_inference_tp2_pp2_dp2_tiny_logitsmatch_zmq": 2,
}
MOE_TINY = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"
PP8_TINY = "gpt_dynamic_inference_tp1_pp8_dp1_tiny_logitsmatch_zmq"
ROUTER = "decoder.layers.0.mlp.router.weight"


@pytest.mark.parametrize("suite, engines", DP_SIBLINGS.items())
def test_the_coordinator_spreads_requests_over_the_engines(suite, engines, tmp_path):
    """Each engine registers with the one coordinator, which spreads the prompts over them; the result
    still matches the golden, and its provenance says which engine served which request."""
    completed = run_logitsmatch(
        "run", suite, "--toolchain", DEFAULT_TOOLCHAIN, env={"LOGITSMATCH_RESULTS": str(tmp_path)}
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"{engines} engine" in completed.stdout and "PASS" in completed.stdout
    provenance = json.loads((tmp_path / suite / "cpu" / DEFAULT_TOOLCHAIN / "result.provenance.json").read_text())
    served = provenance["network"]["served_by_dp_rank"]
    result = json.loads((tmp_path / suite / "cpu" / DEFAULT_TOOLCHAIN / "result.json").read_text())
    assert set(served) == set(result)  # every request, by the id Megatron keys it with
    assert set(served.values()) <= set(range(engines))
    assert len(set(served.values())) > 1, f"one engine served everything: {served}"
    assert len(set(served.values())) == len(result)  # one prompt per engine: none held, none batched by timing
    assert provenance["request_schedule"] == {
        "engines": engines,
        "prompts": len(result),
        "held_until_all_arrived": None,
        "timing_dependent": False,
    }
    assert len(provenance["memory"]["peak_rss_mib_per_rank"]) == 8
    assert all(value > 100 for value in provenance["memory"]["peak_rss_mib_per_rank"])


def test_the_oldest_release_refuses_pipeline_stages_in_one_line(monkeypatch, capsys):
    """0.15.x: refused before any weight is written or rank started (the release is what the venv has;
    this venv is the default toolchain, so the planner is told it runs 0.15.3)."""
    from logitsmatch.cli import main as cli_main
    from logitsmatch.flows import run_suite

    monkeypatch.setattr(run_suite, "installed_release", lambda: (0, 15, 3))
    assert cli_main(["run", PP8_TINY, "--toolchain", DEFAULT_TOOLCHAIN]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "megatron-core 0.15.3 cannot run pipeline parallel (PP8)" in err[0]


def test_an_unknown_layout_is_one_line(tmp_path):
    completed = run_logitsmatch("run", PP8_TINY, "--toolchain", DEFAULT_TOOLCHAIN, "--layout", "tp3",
                                env={"LOGITSMATCH_RESULTS": str(tmp_path)})
    assert_one_line(completed, 2, "num_attention_heads=8 is not divisible by tensor parallel size 3")


def test_a_perturbed_router_weight_moves_the_routing_and_the_report_names_it(tmp_path):
    toolchain = ROUTING_TOOLCHAIN
    python = require_toolchain_venv(toolchain)
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tools"), "LOGITSMATCH_ROOT": str(PROJECT),
           "LOGITSMATCH_RESULTS": str(tmp_path / "results")}

    def logitsmatch(*args):
        return subprocess.run([str(python), "-m", "logitsmatch", *args], cwd=PROJECT, env=env, capture_output=True,
                              text=True, timeout=1500)

    golden = golden_file(MOE_TINY, toolchain)
    first = logitsmatch("run", MOE_TINY, "--toolchain", toolchain)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    routing = json.loads(golden.read_text())["0"]["routing_indices"]
    assert len(routing[0]) == 4 and len(routing[0][0]) == 6  # [tokens, 4 MoE layers, top-6]
    provenance = json.loads(
        (tmp_path / "results" / MOE_TINY / "cpu" / toolchain / "result.provenance.json").read_text()
    )

    from logitsmatch.paths import cache_root
    from logitsmatch.run.synthetic_weights import cache_key

    spec = provenance["weights"]["spec"]
    hidden = spec["architecture"]["hidden_size"]
    packages = provenance["packages"]  # the key of the routing toolchain's checkpoint, not this venv's
    source = (
        cache_root()
        / "checkpoints"
        / cache_key(spec, writer=packages["megatron-core"], numpy_versions=[packages["numpy"]] * 2)
    )
    perturbed = tmp_path / "perturbed"
    perturb = PROJECT / "tests" / "support" / "perturb_checkpoint.py"
    subprocess.run([str(python), str(perturb), str(source), str(perturbed), ROUTER, str(5 * hidden + 3), "4.0"],
                   check=True, capture_output=True, env=env, timeout=900)
    second = logitsmatch("run", MOE_TINY, "--toolchain", toolchain, "--checkpoint", str(perturbed),
                         "--tokenizer-model", str(VOCAB))
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    assert "request 0 routing_indices: routing differs in" in second.stdout
    report = json.loads((tmp_path / "results" / MOE_TINY / "cpu" / toolchain / "report.json").read_text())
    (routing_check,) = [c for c in report["checks"] if c["metric"] == "routing_indices"]
    assert routing_check["status"] == "fail"
    assert "first at token" in routing_check["message"] and "root['0']['routing_indices'][" in routing_check["message"]


STATIC_TINY = "gpt_static_inference_tp1_pp1_tiny_logitsmatch"
PREFIX_CACHING_TINY = "gpt_dynamic_inference_tp1_pp1_tiny_prefix_caching"


def test_the_static_engine_runs_one_batch_without_a_coordinator_and_matches_its_golden(tmp_path):
    """megatron-core's legacy static engine (rank.static_engine): its stand-ins are listed, no coordinator runs."""
    completed = run_logitsmatch("run", STATIC_TINY, "--toolchain", DEFAULT_TOOLCHAIN,
                                env={"LOGITSMATCH_RESULTS": str(tmp_path)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "static engine (--use-legacy-static-engine): the prompts as one batch, no coordinator" in completed.stdout
    assert "PASS" in completed.stdout and "Tensor.cuda() -> identity" in completed.stdout
    provenance = json.loads((tmp_path / STATIC_TINY / "cpu" / DEFAULT_TOOLCHAIN / "result.provenance.json").read_text())
    assert provenance["network"]["coordinator"] is None
    assert provenance["flags"]["not_applied"]["--flash-decode"].startswith("flash decoding is not wired")


REFUSED_BY_THE_DEFAULT_RELEASE = {  # tiny suite -> the start of its one line (megatron-core 0.16 lacks the feature)
    PREFIX_CACHING_TINY: "--inference-dynamic-batching-prefix-caching: prefix caching is not supported by "
                         "megatron-core 0.16",
    "gpt_dynamic_inference_tp1_pp1_tiny_async_sched": "--inference-dynamic-batching-async-sched-mode: async "
                                                      "scheduling is not supported by megatron-core 0.16",
    "hybrid_dynamic_inference_tp1_pp1_dp8_tiny_async_sched_async": (
        "--inference-dynamic-batching-async-sched-mode: async scheduling is not supported by megatron-core 0.16"),
    "gpt_offline_inference_sync_tp1_pp1_dp8_tiny_logitsmatch_zmq": (
        "--use-coordinator: Megatron-LM's offline driver runs megatron-core's MegatronLLM "
        "(megatron.core.inference.apis), which megatron-core 0.16"),
}


@pytest.mark.parametrize("suite", REFUSED_BY_THE_DEFAULT_RELEASE)
def test_a_release_without_a_feature_exits_4_naming_it(suite, tmp_path):
    """The default toolchain's megatron-core 0.16 lacks prefix caching, async scheduling (0.19+) and the offline
    driver's MegatronLLM (0.18+): each suite is refused in one line before any rank starts or weight is written
    (MegatronAsyncLLM's refusal, the same path, is checked without a subprocess in tests/run)."""
    completed = run_logitsmatch("run", suite, "--toolchain", DEFAULT_TOOLCHAIN,
                                env={"LOGITSMATCH_RESULTS": str(tmp_path)})
    assert_one_line(completed, 4, REFUSED_BY_THE_DEFAULT_RELEASE[suite])
    assert not (tmp_path / suite).exists()
