"""Megatron-LM's offline driver on a release without megatron-core's high-level API: refused, named, exit 4.

The default toolchain's megatron-core 0.16 has no MegatronLLM / MegatronAsyncLLM (0.18+): the run is refused
before any rank starts or any weights are written (MegatronAsyncLLM's refusal, the same path, is checked without
a subprocess in tests/run/test_offline_and_routing.py). The offline suites themselves run in the family
(nox -s logitsmatch -- family) on the newest toolchain.
"""

from __future__ import annotations

from support import DEFAULT_TOOLCHAIN, assert_one_line, run_logitsmatch

OFFLINE_SYNC = "gpt_offline_inference_sync_tp1_pp1_dp8_tiny_logitsmatch_zmq"


def test_a_release_without_megatron_llm_exits_4_naming_it(tmp_path):
    completed = run_logitsmatch("run", OFFLINE_SYNC, "--toolchain", DEFAULT_TOOLCHAIN,
                                env={"LOGITSMATCH_RESULTS": str(tmp_path)})
    assert_one_line(completed, 4, "--use-coordinator: Megatron-LM's offline driver runs megatron-core's MegatronLLM "
                                  "(megatron.core.inference.apis), which megatron-core 0.16")
    assert not (tmp_path / OFFLINE_SYNC).exists()
