"""Engine features the family's cases ask for through MODEL_ARGS, as the plan carries them and as a release that
lacks one refuses it (exit 4, named). No engine runs here; the suites run them (nox -s logitsmatch -- family)."""

from __future__ import annotations

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.flows.run_suite import feature_refusal
from logitsmatch.run.plan import (
    CHUNKED_PREFILL,
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS,
    PREFIX_CACHING,
    build_plan,
    chunked_prefill,
    prefix_caching,
    synthetic_checkpoint,
    tokenizer_spec,
)
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite
from support import TINY_SUITE
from support.plans import plan_of

PREFIX_TINY = "gpt_dynamic_inference_tp1_pp1_tiny_prefix_caching"


def test_prefix_caching_is_planned_only_where_the_suite_asks(project):
    assert plan_of(project, PREFIX_TINY)["inference"]["prefix_caching"] == {"eviction_policy": "ref_zero"}
    assert plan_of(project, TINY_SUITE)["inference"]["prefix_caching"] is None


@pytest.mark.parametrize("args, expected", [
    ({PREFIX_CACHING: True}, {"eviction_policy": "ref_zero"}),
    ({PREFIX_CACHING: "true", f"{PREFIX_CACHING}-eviction-policy": "lru"}, {"eviction_policy": "lru"}),
    ({PREFIX_CACHING: False, f"{PREFIX_CACHING}-eviction-policy": "lru"}, None),
    ({}, None),
])
def test_prefix_caching_reads_megatrons_flags(args, expected):
    assert prefix_caching(args) == expected


def test_an_unknown_eviction_policy_is_bad_input():
    with pytest.raises(BadInput, match="eviction-policy 'fifo' is not one of ref_zero, lru"):
        prefix_caching({PREFIX_CACHING: True, f"{PREFIX_CACHING}-eviction-policy": "fifo"})


class Release:
    def __init__(self, prefix_caching: bool, chunked_prefill: bool = True):
        self.prefix_caching = prefix_caching
        self.chunked_prefill = chunked_prefill

    def supports_prefix_caching(self) -> bool:
        return self.prefix_caching

    def supports_chunked_prefill(self) -> bool:
        return self.chunked_prefill


def test_a_release_without_prefix_caching_refuses_a_suite_that_asks_for_it(project):
    asks, plain = load_suite(project, PREFIX_TINY), load_suite(project, TINY_SUITE)
    assert feature_refusal(Release(False), asks, (0, 16, 1)) == (
        f"{PREFIX_CACHING}: prefix caching is not supported by megatron-core 0.16.1")
    assert feature_refusal(Release(True), asks, (0, 19, 2)) is None
    assert feature_refusal(Release(False), plain, (0, 16, 1)) is None


STATIC_TINY = "gpt_static_inference_tp1_pp1_tiny_logitsmatch"


def test_the_static_engine_is_planned_only_where_the_suite_asks(project):
    static = plan_of(project, STATIC_TINY)["inference"]
    assert static["static_engine"] is True and static["hold_requests"] is None  # one batch, nothing held
    assert plan_of(project, TINY_SUITE)["inference"]["static_engine"] is False


@pytest.mark.parametrize("schedule", ["alone", "reversed", "mixed", "chunked"])
def test_the_static_engine_takes_its_prompts_together_only(project, schedule):
    from logitsmatch.errors import Unsupported

    suite = load_suite(project, STATIC_TINY)
    tokenizer = tokenizer_spec(suite, project, False, None)
    with pytest.raises(Unsupported, match=f"schedule {schedule}: the static engine .* one batch"):
        build_plan(suite, get_platform("cpu", schedule=schedule), synthetic_checkpoint(suite, project, tokenizer),
                   project, tokenizer, "127.0.0.1")


STATIC_GRAPHS_TINY = "gpt_static_inference_tp1_pp1_tiny_cudagraphs"
STATIC_PAD_TINY = "gpt_static_inference_cuda_graphs_pad_tp4_pp1_ep4_tiny_logitsmatch"
DYNAMIC_PAD_TINY = "gpt_dynamic_inference_cuda_graphs_pad_tp4_pp1_ep4_tiny_logitsmatch"
HYBRID_GRAPHS_TINY = "hybrid_static_inference_tp1_pp1_tiny_cudagraphs"


def flags_of(project, name: str):
    suite = load_suite(project, name)
    tokenizer = tokenizer_spec(suite, project, False, None)
    return build_plan(suite, get_platform("cpu"), synthetic_checkpoint(suite, project, tokenizer), project,
                      tokenizer, "127.0.0.1")[1]


def test_the_static_driver_warms_up_and_batches_as_the_cuda_graph_case_asks(project):
    """--cuda-graph-impl local: Megatron's static driver runs one warmup request first; --inference-max-requests
    is the static batch (Megatron's default 8, here at least every prompt)."""
    graphs, plain = plan_of(project, STATIC_GRAPHS_TINY)["inference"], plan_of(project, STATIC_TINY)["inference"]
    assert (graphs["static_warmup"], graphs["max_requests"]) == (True, 1)
    assert (plain["static_warmup"], plain["max_requests"]) == (False, 8)
    assert plan_of(project, DYNAMIC_PAD_TINY)["inference"]["static_warmup"] is False  # a static driver's only


def test_the_non_legacy_static_engine_caps_its_dynamic_context_at_the_static_batch(project):
    """StaticInferenceEngine(legacy=False) hands --inference-max-requests to its dynamic context as max_requests;
    --inference-dynamic-batching-max-requests names the cap itself."""
    assert plan_of(project, HYBRID_GRAPHS_TINY)["inference"]["context_max_requests"] == 1
    assert plan_of(project, "hybrid_static_inference_tp1_pp1_tiny_logitsmatch")["inference"][
        "context_max_requests"] is None
    assert plan_of(project, DYNAMIC_PAD_TINY)["inference"]["context_max_requests"] == 8


@pytest.mark.parametrize("name", [STATIC_PAD_TINY, DYNAMIC_PAD_TINY])
def test_moe_padding_for_cuda_graphs_is_passed_to_megatron_core(project, name):
    """megatron-core decides where it pads (the static engine's decode steps, the dynamic engine's graph replays):
    the flag reaches it, and the report lists it applied."""
    assert plan_of(project, name)["moe"]["pad_experts_for_cuda_graph_inference"] is True
    assert plan_of(project, "gpt_static_inference_tp4_pp1_ep4_tiny_logitsmatch")["moe"][
        "pad_experts_for_cuda_graph_inference"] is False
    assert "--moe-pad-experts-for-cuda-graph-inference" in flags_of(project, name).applied


def test_the_cuda_graph_flags_are_reported_not_applied_and_the_rng_trackers_as_no_effect(project):
    flags = flags_of(project, DYNAMIC_PAD_TINY)
    for flag in ("--cuda-graph-impl", "--inference-dynamic-batching-num-cuda-graphs"):
        assert flags.not_applied[flag].startswith("CUDA graphs need CUDA: "), flag
    assert {"--te-rng-tracker", "--inference-rng-tracker"} <= set(flags.no_effect)


@pytest.mark.parametrize("case", ["gpt_static_inference_tp1_pp1_583m_cudagraphs",
                                  "gpt_static_inference_cuda_graphs_pad_tp4_pp1_ep4_16B_logitsmatch"])
def test_the_static_cuda_graph_goldens_number_the_batch_after_the_warmup_request(project, megatron_inference_cases,
                                                                                  case):
    """Megatron's static driver sends its warmup request first, so its golden keys the prompt 1; so do ours."""
    import json

    folder = next(folder for folder in megatron_inference_cases if folder.name == case)
    megatron = json.loads((folder / "golden_values_dev_dgx_h100.json").read_text())
    goldens = [path for path in (project / "golden_values" / case).glob("golden_values_cpu_*.json")
               if not path.name.endswith(".provenance.json")]
    assert list(megatron) == ["1"] and goldens
    for path in goldens:
        assert list(json.loads(path.read_text())) == ["1"], path.name
CHUNKED_TINY = "gpt_dynamic_inference_tp1_pp1_tiny_chunked_prefill"


def test_chunked_prefill_is_planned_at_the_suites_max_tokens_only_where_it_asks(project):
    """The case's --enable-chunked-prefill and --inference-dynamic-batching-max-tokens 64 become the context's
    max_tokens and chunked prefill on, as Megatron-LM's gpt_dynamic_inference.py passes them; the schedule is still
    the suite's own (together)."""
    chunked = plan_of(project, CHUNKED_TINY)
    assert chunked["inference"]["enable_chunked_prefill"] is True
    assert chunked["inference"]["max_tokens"] == 64 == chunked["inference"]["context_max_requests"]
    assert chunked["schedule"]["name"] == "together" and chunked["schedule"]["chunked_prefill_tokens"] is None
    plain = plan_of(project, TINY_SUITE)["inference"]
    assert plain["enable_chunked_prefill"] is False and plain["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("args, expected", [
    ({CHUNKED_PREFILL: True, MAX_TOKENS: 64}, 64),
    ({CHUNKED_PREFILL: "true", MAX_TOKENS: "256"}, 256),
    ({CHUNKED_PREFILL: True}, DEFAULT_MAX_TOKENS),
    ({MAX_TOKENS: 64}, None),
    ({}, None),
])
def test_chunked_prefill_reads_megatrons_flags(args, expected):
    assert chunked_prefill(args) == expected


def test_a_release_without_chunked_prefill_refuses_a_suite_that_asks_for_it(project):
    asks, plain = load_suite(project, CHUNKED_TINY), load_suite(project, TINY_SUITE)
    assert feature_refusal(Release(True, chunked_prefill=False), asks, (0, 14, 0)) == (
        f"{CHUNKED_PREFILL}: chunked prefill is not supported by megatron-core 0.14.0")
    assert feature_refusal(Release(False), asks, (0, 16, 1)) is None
    assert feature_refusal(Release(True, chunked_prefill=False), plain, (0, 14, 0)) is None
