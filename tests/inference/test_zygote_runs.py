"""Forked ranks are indistinguishable from fresh ones: suite A, then B, then A gives A bitwise; forked ranks equal
ranks that import and patch for themselves (LOGITSMATCH_FRESH_RANKS=1). The tests share one tiny run and add
four (about 10 s each here)."""

from __future__ import annotations

import json

import pytest

from logitsmatch.run.runfiles import FRESH_RANKS_ENV
from support import TINY_SUITE, installed_toolchain, run_logitsmatch

MOE_SUITE = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def _run(tmp_path, name: str, suite: str, env: dict | None = None) -> tuple[dict, dict, dict]:
    """One --no-compare run into its own results tree: (result, loaded-weights digests by rank, provenance)."""
    toolchain = installed_toolchain()
    if toolchain is None:
        pytest.fail("this venv matches no toolchain in pyproject.toml")
    results = tmp_path / name
    completed = run_logitsmatch("run", suite, "--toolchain", toolchain, "--no-compare",
                                env={"LOGITSMATCH_RESULTS": str(results), **(env or {})})
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    (result,) = results.rglob("result.json")
    inputs = json.loads((result.parent / "inputs.json").read_text())
    provenance = json.loads((result.parent / "result.provenance.json").read_text())
    digests = {rank["rank"]: rank["weights"] for rank in inputs["ranks"]}
    answers = {request: {key: value for key, value in entry.items() if key != "latency"}  # wall time, not numerics
               for request, entry in json.loads(result.read_text()).items()}
    return answers, digests, provenance


@pytest.fixture(scope="module")
def tiny_forked(tmp_path_factory):
    """One tiny TP8 run with forked ranks, shared by the tests below (one run fewer in CI)."""
    return _run(tmp_path_factory.mktemp("zygote"), "a1", TINY_SUITE)


def test_a_then_b_then_a_gives_a_bitwise(tmp_path, tiny_forked):
    """Tiny TP8, then the tiny MoE sibling (other stand-ins: experts; other parallel state: EP8 x TP4), then
    tiny TP8 again: the two TP8 results, and the weights each rank loaded, are bit-identical."""
    other = _run(tmp_path, "b", MOE_SUITE)
    again = _run(tmp_path, "a2", TINY_SUITE)
    assert other[0] != tiny_forked[0]
    assert tiny_forked[0] == again[0] and tiny_forked[1] == again[1]
    assert tiny_forked[2]["stand_ins"] == again[2]["stand_ins"]


def test_forked_ranks_equal_ranks_that_prepare_themselves(tmp_path, tiny_forked):
    """The zygote's preamble (torch and megatron-core imported, CPU stand-ins patched, tokenizer module loaded)
    before the fork changes nothing: LOGITSMATCH_FRESH_RANKS=1 (every rank imports and patches for itself)
    gives the same result, weights and stand-ins, bit for bit."""
    fresh = _run(tmp_path, "fresh", TINY_SUITE, env={FRESH_RANKS_ENV: "1"})
    assert tiny_forked[0] == fresh[0] and tiny_forked[1] == fresh[1]
    assert tiny_forked[2]["stand_ins"] == fresh[2]["stand_ins"]
    assert tiny_forked[2]["timings_s"]["zygote_prepare"] > fresh[2]["timings_s"]["zygote_prepare"]
