"""A release whose SamplingParams lacks a field a suite's MODEL_ARGS ask for is refused in one line (exit 4), before
any weight is written or rank started. Every release here has both fields, so the adapter is told it lacks one."""

from __future__ import annotations

import pytest

from support import DEFAULT_TOOLCHAIN

CASES = {
    "gpt_dynamic_inference_tp1_pp1_tiny_top_n_logprobs": "--top-n-logprobs: megatron-core 0.16.1's SamplingParams "
                                                         "has no top_n_logprobs",
    "gpt_dynamic_inference_tp1_pp1_tiny_stop_words": "--stop-words: megatron-core 0.16.1's SamplingParams has no "
                                                     "stop_words",
}


@pytest.mark.parametrize("suite, line", CASES.items())
def test_a_release_without_the_sampling_field_exits_4_naming_the_flag(suite, line, monkeypatch, capsys, tmp_path):
    from logitsmatch.cli import main as cli_main
    from logitsmatch.flows import run_suite
    from logitsmatch.rank import adapter_base

    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(run_suite, "installed_release", lambda: (0, 16, 1))
    monkeypatch.setattr(adapter_base.Adapter, "lacks_sampling_fields", lambda self, names: sorted(names))
    assert cli_main(["run", suite, "--toolchain", DEFAULT_TOOLCHAIN]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"suite {suite} not run: {line}"), err
    assert not (tmp_path / suite).exists()
