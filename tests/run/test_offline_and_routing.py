"""Megatron-LM's offline driver (MegatronLLM / MegatronAsyncLLM behind the coordinator, and MegatronLLM's direct
mode, which a suite's ``driver: offline_inference`` asks for) and prefix caching's data-parallel routing policies:
as the plan carries them, as a release that lacks one refuses it (exit 4, named), and, from the committed goldens'
provenance, that megatron-core's coordinator routed by the policy asked for."""

from __future__ import annotations

import json

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.flows.run_suite import feature_refusal
from logitsmatch.run.plan import (
    BLOCK_SIZE_TOKENS,
    COORDINATOR_POLICY,
    PREFIX_CACHING,
    offline_driver,
    prefix_caching,
)
from logitsmatch.suites import OFFLINE_INFERENCE, load_suite
from support import PROJECT
from support.plans import plan_of

OFFLINE = {"sync": "gpt_offline_inference_sync_tp1_pp1_dp8_tiny_logitsmatch_zmq",
           "async": "gpt_offline_inference_async_tp1_pp1_dp8_tiny_logitsmatch_zmq"}
ROUTED = {policy: f"gpt_dynamic_inference_tp1_pp1_dp8_tiny_prefix_caching_{policy}_zmq"
          for policy in ("load_balanced", "longest_prefix")}
PLAIN_DP8 = "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq"
DIRECT = "gpt_offline_inference_sync_tp1_pp1_tiny_logitsmatch"  # MegatronLLM's direct mode, one engine
DIRECT_LEGACY = "gpt_dynamic_inference_tp1_pp1_tiny_logitsmatch"  # the legacy case it mirrors, our ZMQ driver
NEWEST = "py3.12-torch2.14.1-mcore0.19.2"


@pytest.mark.parametrize("args, expected", [
    ({"--use-coordinator": True}, {"api": "MegatronLLM", "use_coordinator": True}),
    ({"--use-coordinator": "true", "--async-mode": True}, {"api": "MegatronAsyncLLM", "use_coordinator": True}),
    ({"--use-coordinator": False}, None),
    ({}, None),
])
def test_the_offline_driver_reads_megatrons_flags(args, expected):
    assert offline_driver(args) == expected


@pytest.mark.parametrize("args, expected", [
    ({}, {"api": "MegatronLLM", "use_coordinator": False}),
    ({"--use-coordinator": True}, {"api": "MegatronLLM", "use_coordinator": True}),
])
def test_the_suites_driver_setting_picks_the_offline_driver_where_the_flags_do_not(args, expected):
    assert offline_driver(args, OFFLINE_INFERENCE) == expected


def test_the_direct_mode_is_planned_for_the_suite_that_names_the_driver(project):
    direct, legacy = plan_of(project, DIRECT)["inference"], plan_of(project, DIRECT_LEGACY)["inference"]
    assert direct["offline_driver"] == {"api": "MegatronLLM", "use_coordinator": False}
    assert direct["hold_requests"] is None  # generate adds every request before its first step
    assert legacy["offline_driver"] is None and legacy["hold_requests"] == 128


def test_async_mode_without_the_coordinator_is_bad_input():
    with pytest.raises(BadInput, match="--async-mode without --use-coordinator"):
        offline_driver({"--async-mode": True})


def test_the_offline_driver_is_planned_only_where_the_suite_asks(project):
    assert plan_of(project, OFFLINE["sync"])["inference"]["offline_driver"]["api"] == "MegatronLLM"
    assert plan_of(project, OFFLINE["async"])["inference"]["offline_driver"]["api"] == "MegatronAsyncLLM"
    assert plan_of(project, PLAIN_DP8)["inference"]["offline_driver"] is None


def test_the_coordinator_policy_is_planned_only_where_the_suite_names_one(project):
    for policy, suite in ROUTED.items():
        assert plan_of(project, suite)["inference"]["prefix_caching"] == {"eviction_policy": "ref_zero",
                                                                          "coordinator_policy": policy}
    assert prefix_caching({PREFIX_CACHING: True}) == {"eviction_policy": "ref_zero"}  # the release's default


def test_an_unknown_coordinator_policy_is_bad_input():
    with pytest.raises(BadInput, match="coordinator-policy 'round_robin' is not one of longest_prefix, "
                                       "first_prefix_block, load_balanced"):
        prefix_caching({PREFIX_CACHING: True, COORDINATOR_POLICY: "round_robin"})


class Release:
    """What feature_refusal asks a release (megatron-core 0.16, 0.18 and 0.19 answer as these do)."""

    def __init__(self, policies: tuple[str, ...], offline_api: bool):
        self.policies, self.offline_api = policies, offline_api

    def supports_prefix_caching(self) -> bool:
        return bool(self.policies)

    def coordinator_policies(self) -> tuple[str, ...]:
        return self.policies

    def has_offline_api(self) -> bool:
        return self.offline_api


MCORE_016 = Release((), False)
MCORE_018 = Release(("longest_prefix", "first_prefix_block", "round_robin"), True)
MCORE_019 = Release(("longest_prefix", "first_prefix_block", "load_balanced"), True)


def test_a_release_without_the_policy_refuses_naming_it(project):
    balanced, longest = (load_suite(project, ROUTED[policy]) for policy in ("load_balanced", "longest_prefix"))
    assert feature_refusal(MCORE_018, balanced, (0, 18, 0)) == (
        f"{COORDINATOR_POLICY} load_balanced: megatron-core 0.18.0's coordinator has no such routing policy "
        "(it has longest_prefix, first_prefix_block, round_robin)")
    assert feature_refusal(MCORE_018, longest, (0, 18, 0)) is None
    assert feature_refusal(MCORE_019, balanced, (0, 19, 2)) is None
    assert feature_refusal(MCORE_016, longest, (0, 16, 1)).startswith(f"{PREFIX_CACHING}: prefix caching is not")


def test_a_release_without_megatron_llm_refuses_the_offline_driver_naming_it(project):
    sync, asynchronous = (load_suite(project, OFFLINE[mode]) for mode in ("sync", "async"))
    assert feature_refusal(MCORE_016, sync, (0, 16, 1)) == (
        "--use-coordinator: Megatron-LM's offline driver runs megatron-core's MegatronLLM "
        "(megatron.core.inference.apis), which megatron-core 0.16.1 does not have")
    assert feature_refusal(MCORE_016, asynchronous, (0, 16, 1)).startswith(
        "--use-coordinator --async-mode: Megatron-LM's offline driver runs megatron-core's MegatronAsyncLLM")
    assert feature_refusal(MCORE_018, asynchronous, (0, 18, 0)) is None
    assert feature_refusal(MCORE_016, load_suite(project, PLAIN_DP8), (0, 16, 1)) is None
    assert feature_refusal(MCORE_016, load_suite(project, DIRECT), (0, 16, 1)) == (
        "driver offline_inference (direct mode, no --use-coordinator): Megatron-LM's offline driver runs "
        "megatron-core's MegatronLLM (megatron.core.inference.apis), which megatron-core 0.16.1 does not have")
    assert feature_refusal(MCORE_018, load_suite(project, DIRECT), (0, 18, 0)) is None


def golden_network(suite: str) -> dict:
    path = PROJECT / "golden_values" / suite / f"golden_values_cpu_{NEWEST}.provenance.json"
    return json.loads(path.read_text())["network"]


def routed(network: dict) -> dict[int, int]:
    """{request id: engine} as megatron-core's coordinator wrote its schedule, checked against the engines'
    own record of which requests they were given (served_by_dp_rank)."""
    records = network["coordinator_schedule"]["records"]
    by_coordinator = {record["request_id"]: record["rank_index"] for record in records}
    assert {int(key): value for key, value in network["served_by_dp_rank"].items()} == by_coordinator
    return by_coordinator


def test_longest_prefix_sends_each_prompt_to_the_engine_holding_its_prefix():
    """The tiny sibling's prompts i and i+3 share their first KV block (and no other pair does): the coordinator
    sends the second of each pair where it sent the first, so three engines serve the six requests."""
    network = golden_network(ROUTED["longest_prefix"])
    assert network["coordinator_schedule"]["policy"] == "longest_prefix"
    engines = routed(network)
    assert [engines[i] for i in range(3)] == [engines[i + 3] for i in range(3)]
    assert len(set(engines.values())) == 3
    assert all(record["num_hashes"] == 1 for record in network["coordinator_schedule"]["records"])


def golden(suite: str) -> dict:
    return json.loads((PROJECT / "golden_values" / suite / f"golden_values_cpu_{NEWEST}.json").read_text())


def test_where_longest_prefix_routed_a_prompt_to_its_partner_the_engine_reused_the_cached_block():
    """Under longest_prefix the second prompt of each pair finds its first 256 tokens cached on its engine, and
    megatron-core returns prompt logprobs only for the tokens it computed: one KV block fewer than under
    load_balanced, where every prompt is prefilled whole on an engine of its own. The tokens are the same."""
    longest, balanced = golden(ROUTED["longest_prefix"]), golden(ROUTED["load_balanced"])
    for request in map(str, range(6)):
        assert longest[request]["generated_tokens"] == balanced[request]["generated_tokens"]
        skipped = len(balanced[request]["logprobs"]) - len(longest[request]["logprobs"])
        assert skipped == (BLOCK_SIZE_TOKENS if int(request) >= 3 else 0), request


def test_load_balanced_spreads_the_same_prompts_over_six_engines():
    network = golden_network(ROUTED["load_balanced"])
    assert network["coordinator_schedule"]["policy"] == "load_balanced"
    assert len(set(routed(network).values())) == 6


def test_the_offline_goldens_ran_megatron_llm_over_eight_engines():
    for mode, api in (("sync", "MegatronLLM"), ("async", "MegatronAsyncLLM")):
        path = PROJECT / "golden_values" / OFFLINE[mode] / f"golden_values_cpu_{NEWEST}.provenance.json"
        provenance = json.loads(path.read_text())
        assert provenance["harness_inputs"]["adapter_decisions"]["offline_driver"]["api"] == api
        assert sorted(set(provenance["network"]["served_by_dp_rank"].values())) == list(range(8))


@pytest.mark.parametrize("size", ["tiny", "583m"])
def test_the_async_driver_computes_what_the_sync_driver_computes(size):
    """Megatron-LM's async offline case promises numerically identical output to the sync one: the same tokens
    and logprobs, bit for bit, in the newest toolchain's goldens (the toolchain the two run in)."""
    sync, asynchronous = (f"gpt_offline_inference_{mode}_tp1_pp1_dp8_{size}_logitsmatch_zmq"
                          for mode in ("sync", "async"))
    numerics = {suite: {key: (value["generated_tokens"], value["logprobs"]) for key, value in golden(suite).items()}
                for suite in (sync, asynchronous)}
    assert numerics[sync] == numerics[asynchronous]


@pytest.mark.parametrize("size", ["tiny", "583m"])
def test_the_direct_mode_computes_what_the_legacy_driver_computes(size):
    """Megatron-LM's offline sync TP1 case promises its legacy case's output byte for byte: MegatronLLM's direct
    mode (generate on the one engine, no coordinator) gives the same tokens and logprobs, bit for bit, as our ZMQ
    driver gives the legacy case, in the newest toolchain's goldens; and its provenance says it ran without a
    coordinator."""
    direct, legacy = (DIRECT.replace("_tiny_", f"_{size}_"), DIRECT_LEGACY.replace("_tiny_", f"_{size}_"))
    numerics = {suite: {key: (value["generated_tokens"], value["logprobs"]) for key, value in golden(suite).items()}
                for suite in (direct, legacy)}
    assert numerics[direct] == numerics[legacy]
    path = PROJECT / "golden_values" / direct / f"golden_values_cpu_{NEWEST}.provenance.json"
    provenance = json.loads(path.read_text())
    assert provenance["harness_inputs"]["adapter_decisions"]["offline_driver"]["use_coordinator"] is False
    assert provenance["network"]["coordinator"] is None and provenance["network"]["coordinator_schedule"] is None
