"""judge.deepdiff_view and the report's paths: logitsmatch's changes are exactly deepdiff's answer.

For every pair, DeepDiff itself runs on the whole documents (logprobs included) with
``deepdiff_options`` and its ``to_json()`` is compared with ``deepdiff_changes``, which
lets deepdiff diff everything but the logprob lists and fills those from numpy. The one
intended difference: positions after a token divergence (not comparable) are moved from
``values_changed`` to ``logitsmatch_not_comparable``; putting them back must give deepdiff's
output exactly. The JSON report's paths must be deepdiff's paths of the same changes.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from deepdiff import DeepDiff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitsmatch.judge.compare import compare
from logitsmatch.judge.deepdiff_view import (
    MOVED_WITHIN_TOLERANCE,
    NOT_COMPARABLE,
    deepdiff_changes,
    deepdiff_options,
    dumps,
)
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.policy import Policy
from logitsmatch.judge.results import deepdiff_path
from support.documents import BASE, add_at, edited, make_request, set_at
from support.parity_cases import history_folders

GENERATED_PAIRS = 250


DEFAULT_POLICY = Policy()


def assert_equivalent(golden: dict, current: dict, policy: Policy = DEFAULT_POLICY) -> dict:
    # as parsed from two files: no object shared between the sides (deepdiff skips identical objects)
    golden, current = json.loads(json.dumps(golden)), json.loads(json.dumps(current))
    result = compare(golden, current, policy)
    changes = deepdiff_changes(golden, current, result)
    ours = json.loads(dumps(changes))
    theirs = json.loads(DeepDiff(golden, current, **deepdiff_options(result)).to_json())
    merged = copy.deepcopy(changes)
    not_comparable = merged.pop(NOT_COMPARABLE, {})
    within = merged.pop(MOVED_WITHIN_TOLERANCE, {})  # ours only: DeepDiff's math_epsilon hides them
    if not_comparable:
        merged.setdefault("values_changed", {}).update(not_comparable)
    both_nan = set()
    if not policy.nan_equal:  # NaN against NaN: see test_nan_against_nan_is_the_policys_call
        for path, change in list(merged.get("values_changed", {}).items()):
            if _both_nan(change):
                del merged["values_changed"][path]
                both_nan.add(path)
        if merged.get("values_changed") == {}:
            del merged["values_changed"]
    assert json.loads(dumps(merged)) == theirs
    # the report: every logprob and token change carries the path deepdiff gives it
    report = result.to_dict()
    moved = [change for entry in report["requests"].values() for change in entry["logprob_changes"]]
    assert set(within) == {change["path"] for change in moved if not change["over_tolerance"]}
    paths = {change["path"] for entry in report["requests"].values()
             for change in [c for c in entry["logprob_changes"] if c["over_tolerance"]] + entry["token_changes"]}
    deepdiff_paths = {path for kind in ("values_changed", "iterable_item_added", "iterable_item_removed")
                      for path in theirs.get(kind, {}) if "['logprobs']" in path or "['generated_tokens']" in path}
    assert paths - both_nan == deepdiff_paths - set(not_comparable) - _length_tails(result, golden, current)
    return ours


def _both_nan(change: dict) -> bool:
    return all(isinstance(v, float) and math.isnan(v) for v in (change["old_value"], change["new_value"]))


def _length_tails(result, golden, current) -> set[str]:
    """Logprob positions past the shorter list: deepdiff's added/removed items, not drift in the report."""
    tails = set()
    for rid in result.request_order:
        g, c = golden[rid].get("logprobs") or [], current[rid].get("logprobs") or []
        tails |= {deepdiff_path(rid, "logprobs", i) for i in range(min(len(g), len(c)), max(len(g), len(c)))}
    return tails


@pytest.mark.parametrize("key", ["17", "foo", "it's", 'say "hi"', "both ' and \"", "ünïcode", ""])
def test_paths_are_deepdiffs_own_strings(key):
    changed = DeepDiff({key: {"logprobs": [0.0, 1.0]}}, {key: {"logprobs": [0.0, 2.0]}})
    assert list(changed["values_changed"]) == [deepdiff_path(key, "logprobs", 1)]


@pytest.mark.parametrize("folder", history_folders(), ids=lambda p: p.name)
def test_real_megatron_drift(folder):
    ours = assert_equivalent(load_golden(folder / "before.json"), load_golden(folder / "after.json"))
    assert ours["values_changed"] and ours[NOT_COMPARABLE]  # tokens diverge: both kinds are there


def test_megatron_goldens_and_their_perturbations(megatron_case_folders):
    for case in megatron_case_folders:
        golden = load_golden(case / "golden_values_dev_dgx_h100.json")
        rid = next(iter(golden))
        n = len(golden[rid]["logprobs"])
        for current in (
            golden,
            edited(golden, add_at([rid, "logprobs", n - 3], 2e-3)),
            edited(golden, add_at([rid, "generated_tokens", 4], 1)),
            edited(golden, lambda d, rid=rid: (d[rid]["logprobs"].pop(), d[rid]["generated_tokens"].pop())),
        ):
            assert_equivalent(golden, current)


@pytest.mark.parametrize("old, new", [(0.0, 0.001), (-1.0, -1.001), (0.0, 0.0010000001), (1e7, 1e7 + 0.005),
                                      (1e7, 1e7 + 0.0101), (-2.5, -2.501), (-0.5, -0.4990000001)])
def test_the_tolerance_boundary_is_the_same_rule(old, new):
    """Megatron's math.isclose(abs_tol=1e-3) (rel_tol 1e-9 left in place) is deepdiff's math_epsilon, to the ulp."""
    golden = edited(BASE, set_at(["0", "logprobs", 0], old))
    current = edited(BASE, set_at(["0", "logprobs", 0], new))
    ours = assert_equivalent(golden, current)
    assert ("root['0']['logprobs'][0]" in ours.get("values_changed", {})) is (not math.isclose(old, new, abs_tol=1e-3))


def test_nan_against_nan_is_the_policys_call():
    """The one place deepdiff's answer is not logitsmatch's: Python's json parser returns one NaN object for
    every NaN token, and deepdiff skips identical objects before ignore_nan_inequality is consulted, so on
    parsed files it never reports NaN against NaN. logitsmatch reports it when the policy says NaN != NaN."""
    nan = json.loads(json.dumps(edited(BASE, set_at(["0", "logprobs", 1], math.nan))))
    other = json.loads(json.dumps(nan))
    assert nan["0"]["logprobs"][1] is other["0"]["logprobs"][1]
    assert DeepDiff(nan, other, math_epsilon=1e-3, zip_ordered_iterables=True, ignore_nan_inequality=False) == {}
    assert assert_equivalent(nan, other) == {}  # NaN == NaN (the default policy)
    strict = deepdiff_changes(nan, other, compare(nan, other, Policy(nan_equal=False)))
    assert list(strict["values_changed"]) == ["root['0']['logprobs'][1]"]


def test_deterministic_mode():
    one_ulp = edited(BASE, set_at(["0", "logprobs", 2], math.nextafter(-0.5, 0.0)))
    assert list(assert_equivalent(BASE, one_ulp, Policy(mode="deterministic"))["values_changed"]) == [
        "root['0']['logprobs'][2]"]


def test_without_zip_deepdiff_aligns_like_difflib():
    """Why zip_ordered_iterables: by default deepdiff may report one inserted logprob as one added
    item (difflib alignment) where Megatron's index-by-index rule sees every later value moved."""
    golden = {"0": {"logprobs": [-1.0, -2.0, -3.0, -4.0]}}
    current = {"0": {"logprobs": [-9.0, -1.0, -2.0, -3.0, -4.0]}}
    aligned = DeepDiff(golden, current, math_epsilon=1e-3)
    assert set(aligned) == {"iterable_item_added"}
    zipped = assert_equivalent(golden, current)
    assert len(zipped["values_changed"]) == 4 and list(zipped["iterable_item_added"]) == ["root['0']['logprobs'][4]"]


@st.composite
def pairs(draw):
    n = draw(st.integers(1, 3))
    golden = {str(i): make_request(prompt=tuple(-0.5 * k for k in range(1, draw(st.integers(2, 25)))),
                                   tokens=tuple(range(5, 5 + draw(st.integers(1, 8)))),
                                   generated=(-0.1,) * 0) for i in range(n)}
    for request in golden.values():
        request["logprobs"] += [-0.01 * (k + 1) for k in range(len(request["generated_tokens"]))]
    current = copy.deepcopy(golden)
    for _ in range(draw(st.integers(0, 6))):
        rid = draw(st.sampled_from(sorted(current)))
        request = current[rid]
        change = draw(st.sampled_from(["noise", "noise", "noise", "token", "shorten", "text", "latency", "drop_field",
                                       "drop_request", "add_request", "nan"]))
        values, tokens = request.get("logprobs"), request.get("generated_tokens")
        if change == "noise" and values:
            values[draw(st.integers(0, len(values) - 1))] += draw(
                st.sampled_from([1e-4, 9.99e-4, 1e-3, 1.001e-3, -0.2, 3.0])
            )
        elif change == "nan" and values:
            index = draw(st.integers(0, len(values) - 1))
            values[index] = math.nan
            if draw(st.booleans()) and rid in golden and index < len(golden[rid].get("logprobs", [])):
                golden[rid]["logprobs"][index] = math.nan
        elif change == "token" and tokens:
            tokens[draw(st.integers(0, len(tokens) - 1))] += 1
        elif change == "shorten" and tokens and values and len(values) > len(tokens):
            tokens.pop()
            values.pop()
        elif change == "text":
            request["generated_text"] = draw(st.sampled_from(["", " a b", " zz"]))
        elif change == "latency":
            request["latency"] = draw(st.sampled_from([None, 2.5, "slow"]))
        elif change == "drop_field":
            request.pop(draw(st.sampled_from(sorted(request))), None)
        elif change == "drop_request" and len(current) > 1:
            current.pop(rid)
        elif change == "add_request":
            current["9"] = make_request()
    policy = draw(st.sampled_from([Policy(), Policy(nan_equal=False), Policy(mode="deterministic")]))
    return golden, current, policy


def test_generated_pairs():
    """GENERATED_PAIRS pairs small enough for deepdiff to diff whole: logitsmatch's answer is deepdiff's."""
    checked = []

    @settings(max_examples=GENERATED_PAIRS, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(pair=pairs())
    def check(pair):
        golden, current, policy = pair
        assert_equivalent(golden, current, policy)
        checked.append(1)

    check()
    assert len(checked) >= GENERATED_PAIRS


MOE_TINY = (Path(__file__).resolve().parents[2] / "golden_values"
            / "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq")


def test_routing_is_a_set_per_token_and_layer_and_timing_is_left_out():
    """megatron-core 0.17 and 0.19 list the same experts in another order (thousands of rows) and their latencies
    differ: compare passes the pair, and so does the deepdiff view, which DeepDiff itself still agrees with."""
    golden, current = (load_golden(MOE_TINY / f"golden_values_cpu_py3.12-torch2.14.1-mcore{v}.json")
                       for v in ("0.17.0", "0.19.2"))
    routing = Policy(mode="deterministic", metrics=["generated_tokens", "logprobs", "routing_indices"])
    assert golden["0"]["routing_indices"] != current["0"]["routing_indices"]  # the order moved...
    assert golden["0"]["latency"] != current["0"]["latency"]
    changes = assert_equivalent(golden, current, routing)
    assert set(changes) == {"values_changed"} and all("logprobs" in path for path in changes["values_changed"])
    assert len(changes["values_changed"]) == compare(golden, current, routing).n_moved == 36  # one ulp each
    moved = edited(golden, set_at(["0", "routing_indices", 3, 1, 0], 99))  # ...a changed expert set still shows
    assert "root['0']['routing_indices'][3][1][0]" in json.dumps(assert_equivalent(golden, moved, routing))


def test_throughput_is_left_out_unless_selected():
    golden = {"0": make_request(), "throughput": [10.0, 11.0, 12.0]}
    current = {"0": make_request(), "throughput": [10.0, 11.0, 11.5]}
    assert assert_equivalent(golden, current) == {}
    selected = assert_equivalent(golden, current, Policy(metrics=["generated_tokens", "logprobs", "throughput"]))
    assert list(selected["values_changed"]) == ["root['throughput'][2]"]
