"""explain on planted causes, end to end on the tiny suite (real TP8 runs).

Every cause is built here from this venv's installed packages (tests/support/planted.py):
decoy packages with new versions and no change, a megatron-core git repository whose third
commit of four scales one op, and a numpy whose random stream moves the synthetic weights.
The runs share one work folder, so the baseline runs once for all tests.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from support import TINY_SUITE, planted, run_logitsmatch


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return {
        "root": root,
        "env": {"LOGITSMATCH_CACHE": str(root / "cache"), "LOGITSMATCH_RESULTS": str(root / "results")},
    }


def explain(shared, name: str, *args: str):
    out = shared["root"] / name
    completed = run_logitsmatch(
        "explain",
        "--baseline-python",
        sys.executable,
        "--workdir",
        str(shared["root"] / "work"),
        "--json",
        str(out.with_suffix(".json")),
        "--markdown",
        str(out.with_suffix(".md")),
        *args,
        env=shared["env"],
        timeout=3600,
    )
    assert completed.returncode in (0, 1), completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed, json.loads(out.with_suffix(".json").read_text())


def test_planted_package_commit_and_module_are_named(shared):
    """4 differing packages (3 decoys + megatron-core from a planted git repository): explain names
    megatron-core, the planted commit and the module the planted op feeds, within the run budget."""
    root = shared["root"]
    repo = planted.megatron_repo(root / "Megatron-LM", commits=4, planted_at=3)
    decoys = [planted.package_overlay(name, "decoy", root / "decoys") for name in ("einops", "msgpack", "psutil")]
    completed, report = explain(shared, "planted", "--candidate-commit", f"megatron-core={root / 'Megatron-LM'}@main",
                                *(arg for decoy in decoys for arg in ("--candidate-path", str(decoy))))
    assert completed.returncode == 1
    suite = report["suites"][TINY_SUITE]
    assert suite["verdict"] == "drift" and report["harness_drift"] is False
    assert report["harness_differences"] == []  # same weights, plan, stand-ins, adapter and decisions
    assert [c["name"] for c in suite["differing_packages"]] == ["einops", "megatron-core", "msgpack", "psutil"]
    assert report["culprits"] == ["megatron-core"]
    assert report["commit"]["sha"] == repo["planted"]
    assert report["commit"]["subject"] == "Scale squared ReLU (the planted op change)"
    assert report["commit"]["files"] == [planted.ACTIVATIONS]
    assert report["first_module"]["name"] == planted.PLANTED_MODULE and report["first_module"]["step"] == 0
    assert report["first_module"]["max_abs_delta"] > 0
    # Cost: n = 4 packages -> at most 2*ceil(log2 4) + 2 runs; c = 4 commits -> at most ceil(log2 4) + 2 more.
    package_runs = [r for r in report["runs"] if "commit" not in r]
    commit_runs = [r for r in report["runs"] if "commit" in r]
    assert len(package_runs) <= 2 * math.ceil(math.log2(4)) + 2
    assert len(commit_runs) <= math.ceil(math.log2(4)) + 2
    search = suite["commit_search"]
    assert search["commits_between"] == 4 and search["skipped"] == []
    assert "reused the base environment's helpers_cpp" in search["installs"][0]["cpp_helper"]
    for run in report["runs"]:
        assert run["outcome"] in ("good", "bad") and run["result"]
    assert f"first moving commit {repo['planted'][:10]} 'Scale squared ReLU" in completed.stdout
    assert f"first moving module {planted.PLANTED_MODULE}" in completed.stdout
    assert "step 3 of at most" in completed.stdout


def test_no_numeric_difference_is_no_drift_without_bisecting(shared):
    root = shared["root"]
    decoys = [planted.package_overlay(name, "nochange", root / "nochange") for name in ("einops", "msgpack")]
    completed, report = explain(
        shared, "nodrift", *(arg for decoy in decoys for arg in ("--candidate-path", str(decoy)))
    )
    assert completed.returncode == 0
    suite = report["suites"][TINY_SUITE]
    assert suite["verdict"] == "no drift" and report["culprits"] == [] and report["commit"] is None
    assert len(report["runs"]) == 2 and report["runs"][1]["result"]["vs_baseline"]["max_abs_delta"] == 0
    assert "no drift (bit-exact" in completed.stdout


def test_planted_harness_difference_is_a_harness_drift(shared):
    """A numpy that draws other random numbers: the loaded weights differ, and the candidate's
    packages on the baseline's checkpoint give the baseline's result: a harness drift."""
    numpy_dir = planted.numpy_overlay(shared["root"] / "numpy")
    completed, report = explain(shared, "harness", "--candidate-path", str(numpy_dir))
    suite = report["suites"][TINY_SUITE]
    assert suite["verdict"] == "harness drift" and report["harness_drift"] is True
    weights = next(d for d in report["harness_differences"] if d["what"] == "loaded weights")
    assert "embedding.word_embeddings.weight" in weights["tensors"]
    assert suite["weights_swap"]["outcome"] == "good"
    assert report["culprits"] == ["numpy"]
    assert report["first_module"]["weights_differing_in_it"], report["first_module"]
    assert "HARNESS DRIFT" in completed.stdout
