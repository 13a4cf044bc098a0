"""judge.compare: first divergence, comparability, modes, NaN policy, structure and report data.

Parity of the default verdict with Megatron-LM's own comparator is tests/judge/test_megatron_parity.py."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from logitsmatch.errors import BadInput
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.policy import Mode, Policy
from support.documents import BASE, DEFAULT, add_at, edited, make_request, set_at
from support.parity_cases import as_a_run_writes_it

HISTORY = Path(__file__).resolve().parents[1] / "data" / "megatron_history"


# --- Megatron's own goldens and real drift ---------------------------------------------

def test_megatron_goldens_report_where_they_moved(megatron_case_folders):
    for case in megatron_case_folders:
        golden = load_golden(case / "golden_values_dev_dgx_h100.json")
        metrics = yaml.safe_load((case / "model_config.yaml").read_text())["METRICS"]
        rid = next(iter(golden))
        n_logprobs = len(golden[rid]["logprobs"])
        prompt = n_logprobs - len(golden[rid]["generated_tokens"])
        run = as_a_run_writes_it(golden)  # MoE goldens keep routing rows for sampled tokens only
        perturbations = {
            "self": run,
            "generated logprob +2e-3": edited(run, add_at([rid, "logprobs", n_logprobs - 5], 2e-3)),
            "token 5 changed": edited(run, add_at([rid, "generated_tokens", 5], 1)),
        }
        for name, current in perturbations.items():
            result = compare(golden, current, Policy.from_suite(metrics))
            report = result.to_dict()["requests"][rid]
            if name == "self":
                assert result.passed and result.n_over_tolerance == 0
            elif name == "generated logprob +2e-3":
                assert [(c["index"], c["part"]) for c in report["logprob_changes"]] == [(n_logprobs - 5, "generated")]
                assert report["logprob_changes"][0]["delta"] == pytest.approx(2e-3)
            elif name == "token 5 changed":
                assert report["first_token_divergence"] == 5
                assert report["stats"]["compared"] == prompt + 5


def _history_pairs():
    pairs = sorted(p for p in HISTORY.iterdir() if p.is_dir())
    assert pairs, "tests/data/megatron_history holds no before/after pairs"
    return pairs


@pytest.mark.parametrize("folder", _history_pairs(), ids=lambda p: p.name)
def test_real_toolchain_drift_is_reported_exactly(folder):
    before_raw = json.loads((folder / "before.json").read_text())
    after_raw = json.loads((folder / "after.json").read_text())
    result = compare(load_golden(folder / "before.json"), load_golden(folder / "after.json"), Policy())

    # Expected values computed with plain python, independently of the engine.
    g, c = before_raw["0"], after_raw["0"]
    divergence = next(i for i, (a, b) in enumerate(zip(g["generated_tokens"], c["generated_tokens"])) if a != b)
    prompt = len(g["logprobs"]) - len(g["generated_tokens"])
    comparable = prompt + divergence
    over = [i for i in range(comparable) if not math.isclose(g["logprobs"][i], c["logprobs"][i], abs_tol=1e-3)]

    report = result.to_dict()["requests"]["0"]
    assert report["first_token_divergence"] == divergence
    moved = [i for i in range(comparable) if g["logprobs"][i] != c["logprobs"][i]]
    assert [e["index"] for e in report["logprob_changes"]] == moved  # every one that moved, within tolerance or not
    assert [e["index"] for e in report["logprob_changes"] if e["over_tolerance"]] == over
    for entry in report["logprob_changes"]:
        i = entry["index"]
        assert entry["request"] == "0" and entry["over_tolerance"] == (i in over)
        assert entry["part"] == ("prompt" if i < prompt else "generated")
        assert (entry["golden"], entry["current"]) == (g["logprobs"][i], c["logprobs"][i])
        assert entry["path"] == f"root['0']['logprobs'][{i}]"
        assert entry["delta"] == c["logprobs"][i] - g["logprobs"][i]
    assert report["token_changes"][0] == {"path": f"root['0']['generated_tokens'][{divergence}]", "index": divergence,
                                          "golden": g["generated_tokens"][divergence],
                                          "current": c["generated_tokens"][divergence]}
    assert report["stats"]["compared"] == comparable
    assert report["stats"]["not_comparable"] == len(g["logprobs"]) - comparable
    assert result.first_divergences == {"0": divergence} and not result.tokens_agree
    assert result.n_over_tolerance == len(over)
    assert result.max_abs_delta == max(abs(c["logprobs"][i] - g["logprobs"][i]) for i in range(comparable))
    assert not result.passed


def test_real_drift_structural_changes_from_deepdiff_paths():
    folder = HISTORY / "te2.10_decode_graphs_only"
    result = compare(load_golden(folder / "before.json"), load_golden(folder / "after.json"),
                     Policy(metrics=DEFAULT + ["throughput"]))
    kinds = {(c["kind"], c["path"]) for c in result.structural_changes}
    assert ("extra_field", "root['0']['top_n_logprobs']") in kinds
    assert ("missing_field", "root['0']['cuda_graph_request_count_map']['112']") in kinds
    assert not any(c["fails"] for c in result.structural_changes)
    throughput = [c for c in result.checks if c.metric == "throughput"]
    assert throughput[0].status == "fail" and "below 0.9" in throughput[0].message


# --- first divergence and comparability --------------------------------------------------

def test_logprobs_from_the_diverged_token_on_are_not_comparable():
    golden = {
        "0": make_request(prompt=(-1.0, -2.0, -3.0, -4.0), tokens=(1, 2, 3, 4), generated=(-0.1, -0.2, -0.3, -0.4))
    }
    current = {
        "0": make_request(prompt=(-1.0, -2.0, -3.5, -4.0), tokens=(1, 2, 9, 9), generated=(-0.1, -0.9, -7.0, -8.0))
    }
    result = compare(golden, current, Policy())
    entry = result.to_dict()["requests"]["0"]
    assert entry["first_token_divergence"] == 2
    # Index 4 + 2 = 6 is the logprob OF the diverged token: not comparable, like 7.
    assert [(c["index"], c["part"]) for c in entry["logprob_changes"]] == [(2, "prompt"), (5, "generated")]
    assert entry["stats"] == {**entry["stats"], "compared": 6, "not_comparable": 2, "over_tolerance": 2}
    assert [t["index"] for t in entry["token_changes"]] == [2, 3]
    assert "not comparable from index 6" in next(c.message for c in result.checks if c.metric == "logprobs")


def test_early_stop_diverges_at_the_shorter_length():
    golden = {"0": make_request(tokens=(1, 2, 3), generated=(-0.1, -0.2, -0.3))}
    current = {"0": make_request(tokens=(1, 2), generated=(-0.1, -0.2))}
    entry = compare(golden, current, Policy()).to_dict()["requests"]["0"]
    assert entry["first_token_divergence"] == 2
    assert entry["token_changes"] == [
        {"path": "root['0']['generated_tokens'][2]", "index": 2, "golden": 3, "current": None}
    ]
    assert entry["stats"]["compared"] == 5 and entry["stats"]["not_comparable"] == 1


def test_unequal_prompt_parts_are_not_comparable():
    golden = {"0": make_request(prompt=(-1.0, -2.0), tokens=(1, 2), generated=(-0.1, -0.2))}
    # Another tokenization of the one text: the prompt logprobs differ from the first token on.
    current = {"0": make_request(prompt=(-1.5, -2.5, -3.0), tokens=(1,), generated=(-0.1,))}
    result = compare(golden, current, Policy())
    assert result.requests["0"].n_compared == 0 and not result.passed
    message = next(c.message for c in result.checks if c.metric == "logprobs")
    assert "same prompt text, tokenised to 3 vs 4 tokens" in message  # one input_prompt, two tokenizations


# --- modes, tolerances and NaN policy ----------------------------------------------------

def test_deterministic_mode_is_bit_exact():
    one_ulp = edited(BASE, set_at(["0", "logprobs", 0], math.nextafter(-1.5, 0.0)))
    assert compare(BASE, one_ulp, Policy()).passed
    assert not compare(BASE, one_ulp, Policy(mode=Mode.DETERMINISTIC)).passed
    signed_zero = edited(BASE, set_at(["0", "logprobs", 0], -0.0)), edited(BASE, set_at(["0", "logprobs", 0], 0.0))
    assert not compare(*signed_zero, Policy(mode="deterministic")).passed
    assert compare(BASE, copy.deepcopy(BASE), Policy(mode="deterministic")).passed


def test_approximate_mode_budget_follows_megatron_training_rule():
    values = [-1.0 - i / 1000 for i in range(1117)]
    golden = {"0": {"generated_tokens": [], "logprobs": values}}

    def with_changes(n):
        return {"0": {"generated_tokens": [], "logprobs": [v + (0.1 if i < n else 0.0) for i, v in enumerate(values)]}}

    approx = Policy(mode=Mode.APPROXIMATE)
    assert approx.allowed_failures(1117) == 11
    assert compare(golden, with_changes(11), approx).passed
    assert not compare(golden, with_changes(12), approx).passed
    assert compare(golden, with_changes(12), Policy(mode=Mode.APPROXIMATE, failure_budget=12)).passed
    assert compare(golden, with_changes(0), approx).passed
    assert [approx.allowed_failures(n) for n in (0, 1, 2, 150, 10_000)] == [0, 0, 1, 1, 50]


def test_approximate_tolerances_are_symmetric_abs_or_rel():
    golden = {"0": {"logprobs": [-100.0, -1e-9]}}
    current = {"0": {"logprobs": [-100.0009, -2e-9]}}
    assert compare(golden, current, Policy(mode="approximate", failure_budget=0)).passed  # rel 1e-5 of 100, abs 1e-5
    assert not compare(golden, current, Policy(mode="approximate", abs_tol=0, rel_tol=1e-6, failure_budget=0)).passed


def test_nan_and_inf_policy():
    def doc(value):
        return edited(BASE, set_at(["0", "logprobs", 1], value))

    assert compare(doc(math.nan), doc(math.nan), Policy()).passed
    assert not compare(doc(math.nan), doc(math.nan), Policy(nan_equal=False)).passed
    assert compare(doc(math.nan), doc(math.nan), Policy(mode="deterministic")).passed
    assert not compare(doc(math.nan), doc(math.nan), Policy(mode="deterministic", nan_equal=False)).passed
    against_number = compare(doc(math.nan), BASE, Policy())
    assert not against_number.passed and against_number.max_abs_delta == math.inf
    entry = against_number.to_dict()["requests"]["0"]["logprob_changes"][0]
    assert (entry["golden"], entry["delta"]) == ("nan", "nan")
    json.dumps(against_number.to_dict(), allow_nan=False)  # the report is strict JSON
    strict = Policy(mode="approximate", failure_budget=0)
    assert compare(doc(math.inf), doc(math.inf), strict).passed
    assert not compare(doc(math.inf), doc(-math.inf), strict).passed


# --- Policy construction ------------------------------------------------------------------

def test_policy_from_suite_comparison_block():
    policy = Policy.from_suite(["generated_tokens", "logprobs"], {"mode": "approximate", "abs_tol": "1e-4",
                                                                  "failure_budget": 3, "nan_equal": False})
    assert (policy.mode, policy.abs_tol, policy.rel_tol, policy.failure_budget, policy.nan_equal) == \
        (Mode.APPROXIMATE, 1e-4, 1e-5, 3, False)
    assert Policy.from_suite(["logprobs"], None) == Policy(metrics=("logprobs",))
    assert Policy() == Policy(mode=Mode.MEGATRON, abs_tol=1e-3, rel_tol=1e-9, failure_budget=0)


@pytest.mark.parametrize("metrics, comparison, fragment", [
    (DEFAULT, {"tolerance": 1}, "unknown key"),
    (DEFAULT, {"mode": "fuzzy"}, "unknown comparison mode"),
    (DEFAULT, {"mode": "deterministic", "abs_tol": 1e-3}, "bit-exact"),
    (DEFAULT, {"abs_tol": -1}, ">= 0"),
    (DEFAULT, {"rel_tol": "nan"}, "finite"),
    (DEFAULT, {"abs_tol": "abc"}, "must be a number"),
    (DEFAULT, {"failure_budget": 1.5}, "integer"),
    (DEFAULT, {"nan_equal": "yes"}, "true or false"),
    (["logits"], None, "unknown metric"),
    ("logprobs", None, "list of names"),
    ([{"logprobs": 1}], None, "list of names"),
])
def test_bad_policies_are_bad_input(metrics, comparison, fragment):
    with pytest.raises(BadInput, match=fragment):
        Policy.from_suite(metrics, comparison)


# --- structure, summary numbers, deepdiff cost ----------------------------------------------

def test_structural_changes_and_which_fail():
    current = edited(BASE, lambda d: (d.pop("1"), d["0"].pop("latency"), d["0"].update(ttft=0.5),
                                      d["0"]["logprobs"].append(-1.0), d.update({"5": make_request()})))
    current["0"]["generated_text"] = " a b c"
    changes = {(c["kind"], c["path"]): c["fails"] for c in compare(BASE, current, Policy()).structural_changes}
    assert changes == {
        ("missing_request", "root['1']"): True,
        ("extra_request", "root['5']"): True,
        ("missing_field", "root['0']['latency']"): False,
        ("extra_field", "root['0']['ttft']"): False,
        ("length_change", "root['0']['logprobs']"): True,
    }
    typed = compare(BASE, edited(BASE, set_at(["0", "latency"], None)), Policy()).structural_changes
    assert [(c["kind"], c["golden"], c["current"]) for c in typed] == [("type_change", "number", "null")]


def test_deepdiff_sees_only_skeletons(monkeypatch):
    seen = []

    def recording_deepdiff(t1, t2, **kwargs):
        seen.append((t1, t2))
        return original(t1, t2, **kwargs)

    import deepdiff

    original = deepdiff.DeepDiff
    monkeypatch.setattr(deepdiff, "DeepDiff", recording_deepdiff)
    long = {"0": make_request(generated=[-0.5] * 5000, tokens=list(range(5000))), "1": make_request()}
    current = edited(long, lambda d: d["1"].pop("latency"))
    compare(long, current, Policy())
    assert seen == [({"1": {"input_prompt": "string", "generated_text": "string", "generated_tokens": "list[3]",
                            "latency": "number", "logprobs": "list[6]"}},
                     {"1": {"input_prompt": "string", "generated_text": "string", "generated_tokens": "list[3]",
                            "logprobs": "list[6]"}})]
    seen.clear()
    compare(long, copy.deepcopy(long), Policy())
    assert seen == []


def test_matrix_summary_numbers():
    current = edited(
        BASE, lambda d: (add_at(["0", "logprobs", 0], 0.25)(d), set_at(["1", "generated_tokens", 2], 7)(d))
    )
    result = compare(BASE, current, Policy())
    assert result.tokens_agree is False
    assert result.first_divergences == {"0": None, "1": 2}
    assert result.max_abs_delta == pytest.approx(0.25)
    assert result.n_over_tolerance == 1
    clean = compare(BASE, BASE, Policy())
    assert (clean.tokens_agree, clean.max_abs_delta, clean.n_over_tolerance) == (True, 0.0, 0)


def test_statistics_match_numpy():
    rng = np.random.default_rng(3)
    values = (-rng.exponential(2.0, 400)).tolist()
    noisy = [v + d for v, d in zip(values, rng.normal(0, 1e-3, 400).tolist())]
    golden = {
        "0": {"generated_tokens": [1] * 10, "logprobs": values},
        "1": {"generated_tokens": [], "logprobs": values[:7]},
    }
    current = {
        "0": {"generated_tokens": [1] * 10, "logprobs": noisy},
        "1": {"generated_tokens": [], "logprobs": values[:7]},
    }
    result = compare(golden, current, Policy())
    magnitude = np.abs(np.array(noisy) - np.array(values))
    stats = result.to_dict()["requests"]["0"]["stats"]
    assert stats["max_abs_delta"] == magnitude.max()
    assert stats["mean_abs_delta"] == pytest.approx(magnitude.mean())
    assert stats["p99_abs_delta"] == pytest.approx(np.percentile(magnitude, 99))
    assert stats["over_tolerance"] == int((magnitude > 1e-3).sum())
    assert result.to_dict()["requests"]["1"]["stats"]["max_abs_delta"] == 0.0
    assert result.p99_abs_delta == pytest.approx(np.percentile(np.concatenate([magnitude, np.zeros(7)]), 99))
    assert result.mean_abs_delta == pytest.approx(magnitude.sum() / 407)


def test_compare_rejects_unvalidated_garbage_as_bad_input():
    with pytest.raises(BadInput, match=r"current: request '0': logprobs\[1\] is null, expected a number"):
        compare(BASE, edited(BASE, set_at(["0", "logprobs", 1], None)), Policy())
    with pytest.raises(BadInput, match=r"golden: request '1': generated_tokens\[0\] is a string, expected an integer"):
        compare(edited(BASE, set_at(["1", "generated_tokens", 0], "x")), BASE, Policy())
    with pytest.raises(BadInput, match="expected an object"):
        compare([], BASE, Policy())


# --- routing_indices as logitsmatch records them: every row ---------------------------------------

def routed_pair(prompt_tokens: int = 5, generated: int = 4, layers: int = 3, topk: int = 2, seed: int = 0):
    """A golden request with full routing [prompt + generated - 1, layers, topk] and its current copy."""
    rng = np.random.default_rng(seed)
    routing = np.stack([rng.permutation(16)[:topk] for _ in range((prompt_tokens + generated - 1) * layers)])
    request = make_request(prompt=[-1.0] * (prompt_tokens - 1), tokens=range(11, 11 + generated),
                           generated=[-0.5] * generated)
    request["routing_indices"] = routing.reshape(prompt_tokens + generated - 1, layers, topk).tolist()
    golden = {"0": request}
    return golden, copy.deepcopy(golden)


ROUTING = ["generated_tokens", "logprobs", "routing_indices"]


def test_full_routing_equal_as_sets_passes():
    golden, current = routed_pair()
    for row in current["0"]["routing_indices"]:
        for experts in row:
            experts.reverse()  # the order within the top-k is not compared (Megatron sorts too)
    assert compare(golden, current, Policy(metrics=ROUTING)).passed


def test_a_moved_expert_fails_and_the_check_names_token_layer_and_path():
    golden, current = routed_pair()
    moved = current["0"]["routing_indices"][6][2]
    moved[0] = next(e for e in range(16) if e not in moved)
    result = compare(golden, current, Policy(metrics=ROUTING))
    assert not result.passed
    (check,) = [c for c in result.failed_checks if c.metric == "routing_indices"]
    assert "first at token 6, layer 2 (root['0']['routing_indices'][6][2])" in check.message
    assert "1 of 24 (token, layer) expert sets over 8 tokens" in check.message
    assert f"current {sorted(moved)}" in check.message


def test_routing_after_a_token_divergence_is_not_compared():
    golden, current = routed_pair(prompt_tokens=5, generated=4)
    current["0"]["generated_tokens"][2] += 1  # the 3rd generated token differs: rows 5 + 2 = 7 on differ in input
    current["0"]["routing_indices"][7][0] = [98, 99]
    result = compare(golden, current, Policy(metrics=ROUTING))
    assert {c.metric for c in result.failed_checks} == {"generated_tokens", "logprobs"}
    current["0"]["routing_indices"][6][0] = [98, 99]  # the row of the 2nd generated token: still comparable
    result = compare(golden, current, Policy(metrics=ROUTING))
    assert "routing_indices" in {c.metric for c in result.failed_checks}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop(), "routing indices cover 7 tokens, golden 8"),
        (lambda r: [row.pop() for row in r], "routing indices shape (8, 2, 2), golden (8, 3, 2)"),
    ],
)
def test_routing_of_another_shape_fails_naming_it(change, message):
    golden, current = routed_pair()
    change(current["0"]["routing_indices"])
    (check,) = [
        c for c in compare(golden, current, Policy(metrics=ROUTING)).failed_checks if c.metric == "routing_indices"
    ]
    assert message in check.message


def test_routing_that_is_not_nested_ids_is_bad_input_naming_the_place():
    golden, current = routed_pair()
    current["0"]["routing_indices"][0] = 5
    message = ("routing_indices mixes ids and lists at one depth (routing_indices[0] is a number, "
               "routing_indices[1] a list) (at root['0']['routing_indices'][0])")
    with pytest.raises(BadInput, match=re.escape(message)):
        compare(golden, current, Policy(metrics=ROUTING))
