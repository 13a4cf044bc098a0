"""compare.py: parity with Megatron-LM's inference verdict, first divergence, modes, NaN policy, report data."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from statistics import StatisticsError, median

import numpy as np
import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from logitsmatch.errors import BadInput
from logitsmatch.judge import compare as compare_module
from logitsmatch.judge.compare import Mode, Policy, compare
from logitsmatch.judge.golden_io import NON_REQUEST_KEYS, load_golden

REPO_ROOT = Path(__file__).resolve().parent.parent
MEGATRON_CASES = REPO_ROOT.parent / "shared" / "megatron_cases"
HISTORY = Path(__file__).resolve().parent / "data" / "megatron_history"


# --- the oracle: Megatron-LM's rule, re-implemented from reading -------------------------

def megatron_verdict(golden: dict, current: dict, metrics: list[str]) -> bool:
    """True when Megatron-LM's test_inference_pipeline would pass this pair.

    Written from a reading of tests/functional_tests/python_test_utils/
    test_inference_regular_pipeline.py (NVIDIA/Megatron-LM), in the version
    that validates the subset of requests the current run has
    (test_inference_request_subset.py). An exception the rule would raise
    (KeyError on a missing field, StatisticsError on too few samples) is a
    failed test there, so it is a failure here.
    """
    try:
        _megatron_rule(copy.deepcopy(golden), copy.deepcopy(current), list(metrics))
    except (AssertionError, KeyError, TypeError, IndexError, ValueError, StatisticsError):
        return False
    return True


def _median_after_warmup(value):
    if isinstance(value, list):
        return float(median(value[1:] if len(value) > 1 else value))
    return float(value)


def _megatron_rule(golden: dict, current: dict, metrics: list[str]) -> None:
    if not metrics:
        return
    golden_ids = set(golden) - NON_REQUEST_KEYS
    current_ids = set(current) - NON_REQUEST_KEYS
    assert golden_ids >= current_ids
    assert current_ids, "No current requests"
    if "throughput" in golden and "throughput" in metrics:
        sampled, expected = median(current["throughput"][1:]), median(golden["throughput"][1:])
        assert sampled >= 0.9 * expected
        assert sampled < 1.2 * expected
    if "mem-max-allocated-bytes" in golden and "mem-max-allocated-bytes" in metrics:
        assert "mem-max-allocated-bytes" in current
        sampled = _median_after_warmup(current["mem-max-allocated-bytes"])
        expected = _median_after_warmup(golden["mem-max-allocated-bytes"])
        assert expected > 0
        assert 0.95 * expected <= sampled <= 1.05 * expected
    for rid in current_ids:
        g, c = golden[rid], current[rid]
        tested = False
        if "generated_tokens" in g and "generated_tokens" in metrics:
            tested = True
            assert g["generated_tokens"] == c["generated_tokens"]
        if "logprobs" in g and "logprobs" in metrics:
            tested = True
            assert len(g["logprobs"]) == len(c["logprobs"])
            for a, b in zip(g["logprobs"], c["logprobs"]):
                assert math.isclose(a, b, abs_tol=0.001)
        if "generated_text" in g and "generated_text" in metrics:
            tested = True
            shortest = min(len(g["generated_text"]), len(c["generated_text"]))
            assert shortest > 0
            assert g["generated_text"][:shortest] == c["generated_text"][:shortest]
        if "routing_indices" in g and "routing_indices" in metrics:
            tested = True
            token_indices = g.get("routing_indices_token_indices")
            assert token_indices is not None
            chosen = np.array(c["routing_indices"])[token_indices]
            assert np.array_equal(np.sort(np.array(g["routing_indices"]), axis=-1), np.sort(chosen, axis=-1))
        assert tested


# --- crafted documents -----------------------------------------------------------------

def make_request(prompt=(-1.5, -2.25, -0.5), tokens=(11, 12, 13), generated=(-0.1, -0.2, -0.3), text=" a b c"):
    return {
        "input_prompt": "p q r s",
        "generated_text": text,
        "generated_tokens": list(tokens),
        "latency": 1.25,
        "logprobs": list(prompt) + list(generated),
    }


def make_doc(n_requests=2, **run_keys):
    doc = {str(i): make_request() for i in range(n_requests)}
    doc.update(run_keys)
    return doc


def edited(doc, edit):
    """A deep copy of `doc` changed by `edit(copy)`."""
    out = copy.deepcopy(doc)
    edit(out)
    return out


def _set(path, value):
    def apply(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _add(path, amount):
    def apply(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] += amount
    return apply


BASE = make_doc()
TPUT = make_doc(throughput=[5.0, 100.0, 102.0, 98.0])
MEM = make_doc(**{"mem-max-allocated-bytes": 1_000_000})
# Megatron's goldens keep routing rows only for the sampled tokens; a run records every token.
ROUTED = {"0": dict(make_request(), routing_indices=[[3, 1], [5, 4]], routing_indices_token_indices=[0, 2])}
DEFAULT = ["generated_tokens", "logprobs"]

PARITY_CASES = {
    "identical": (BASE, BASE, DEFAULT),
    "logprob within 1e-3": (BASE, edited(BASE, _add(["0", "logprobs", 4], 9e-4)), DEFAULT),
    "logprob beyond 1e-3": (BASE, edited(BASE, _add(["0", "logprobs", 1], 1.1e-3)), DEFAULT),
    "logprob exactly 1e-3 away": (edited(BASE, _set(["0", "logprobs", 0], 0.0)),
                                  edited(BASE, _set(["0", "logprobs", 0], 0.001)), DEFAULT),
    "rounding at the 1e-3 edge": (edited(BASE, _set(["0", "logprobs", 0], -1.0)),
                                  edited(BASE, _set(["0", "logprobs", 0], -1.001)), DEFAULT),
    "math.isclose rel_tol 1e-9 on large values": (edited(BASE, _set(["0", "logprobs", 0], 1e7)),
                                                  edited(BASE, _set(["0", "logprobs", 0], 1e7 + 0.005)), DEFAULT),
    "token changed": (BASE, edited(BASE, _set(["1", "generated_tokens", 1], 99)), DEFAULT),
    "token changed, tokens not a metric": (BASE, edited(BASE, _set(["1", "generated_tokens", 1], 99)), ["generated_text"]),
    "logprobs one longer": (BASE, edited(BASE, lambda d: d["0"]["logprobs"].insert(0, -3.0)), DEFAULT),
    "text is a prefix": (BASE, edited(BASE, _set(["0", "generated_text"], " a b")), ["generated_text"]),
    "text differs": (BASE, edited(BASE, _set(["0", "generated_text"], " a x c")), ["generated_text"]),
    "text empty": (BASE, edited(BASE, _set(["0", "generated_text"], "")), ["generated_text"]),
    "text differs, not a metric": (BASE, edited(BASE, _set(["0", "generated_text"], " zzz")), DEFAULT),
    "latency differs": (BASE, edited(BASE, _set(["0", "latency"], 9.0)), DEFAULT),
    "extra request in current": (BASE, edited(BASE, _set(["7"], make_request())), DEFAULT),
    "fewer requests in current": (BASE, edited(BASE, lambda d: d.pop("1")), DEFAULT),
    "metric absent from golden request": (edited(BASE, lambda d: d["0"].pop("logprobs")), BASE, DEFAULT),
    "no metric in golden request": (edited(BASE, lambda d: [d["0"].pop(k) for k in DEFAULT]), BASE, DEFAULT),
    "metric missing in current": (BASE, edited(BASE, lambda d: d["1"].pop("generated_tokens")), DEFAULT),
    "inf equals inf": (edited(BASE, _set(["0", "logprobs", 2], -math.inf)),
                       edited(BASE, _set(["0", "logprobs", 2], -math.inf)), DEFAULT),
    "inf against -inf": (edited(BASE, _set(["0", "logprobs", 2], math.inf)),
                         edited(BASE, _set(["0", "logprobs", 2], -math.inf)), DEFAULT),
    "inf against a number": (edited(BASE, _set(["0", "logprobs", 2], -math.inf)), BASE, DEFAULT),
    "no metrics at all": (BASE, edited(BASE, _set(["0", "generated_tokens"], [])), []),
    "throughput within": (TPUT, edited(TPUT, _set(["throughput"], [1.0, 95.0, 91.0, 99.0])), DEFAULT + ["throughput"]),
    "throughput too low": (TPUT, edited(TPUT, _set(["throughput"], [1.0, 80.0, 85.0, 90.0])), DEFAULT + ["throughput"]),
    "throughput too high": (TPUT, edited(TPUT, _set(["throughput"], [1.0, 120.0, 130.0, 125.0])), DEFAULT + ["throughput"]),
    "throughput not a metric": (TPUT, edited(TPUT, _set(["throughput"], [1.0, 1.0, 1.0])), DEFAULT),
    "memory within 5%": (MEM, edited(MEM, _set(["mem-max-allocated-bytes"], 1_040_000)), DEFAULT + ["mem-max-allocated-bytes"]),
    "memory 6% higher": (MEM, edited(MEM, _set(["mem-max-allocated-bytes"], 1_060_000)), DEFAULT + ["mem-max-allocated-bytes"]),
    "memory missing in current": (MEM, edited(MEM, lambda d: d.pop("mem-max-allocated-bytes")), DEFAULT + ["mem-max-allocated-bytes"]),
    "routing reordered within a token": (ROUTED, edited(ROUTED, _set(["0", "routing_indices"], [[1, 3], [9, 9], [4, 5]])),
                                         DEFAULT + ["routing_indices"]),
    "routing differs": (ROUTED, edited(ROUTED, _set(["0", "routing_indices"], [[1, 2], [2, 0], [4, 5]])),
                        DEFAULT + ["routing_indices"]),
}
EXPECTED_VERDICT = {
    "identical": True, "logprob within 1e-3": True, "logprob beyond 1e-3": False,
    "logprob exactly 1e-3 away": True, "math.isclose rel_tol 1e-9 on large values": True,
    "token changed": False, "token changed, tokens not a metric": True, "logprobs one longer": False,
    "text is a prefix": True, "text differs": False, "text empty": False, "text differs, not a metric": True,
    "latency differs": True, "extra request in current": False, "fewer requests in current": True,
    "metric absent from golden request": True, "no metric in golden request": False,
    "metric missing in current": False, "inf equals inf": True, "inf against -inf": False,
    "inf against a number": False, "no metrics at all": True, "throughput within": True,
    "throughput too low": False, "throughput too high": False, "throughput not a metric": True,
    "memory within 5%": True, "memory 6% higher": False, "memory missing in current": False,
    "routing reordered within a token": True, "routing differs": False,
}


@pytest.mark.parametrize("name", sorted(PARITY_CASES))
def test_verdict_matches_megatron_on_crafted_cases(name):
    golden, current, metrics = PARITY_CASES[name]
    expected = megatron_verdict(golden, current, metrics)
    if name != "rounding at the 1e-3 edge":
        assert expected is EXPECTED_VERDICT[name], "the oracle itself disagrees with the case's intent"
    assert compare(golden, current, Policy(metrics=metrics)).passed is expected


def test_nan_matches_megatron_when_nan_is_not_equal():
    nan_doc = edited(BASE, _set(["0", "logprobs", 3], math.nan))
    assert megatron_verdict(nan_doc, nan_doc, DEFAULT) is False
    assert compare(nan_doc, nan_doc, Policy(nan_equal=False)).passed is False
    assert compare(nan_doc, nan_doc, Policy()).passed is True  # our default: NaN == NaN


def _megatron_case_dirs():
    if not MEGATRON_CASES.is_dir():
        pytest.skip("shared/megatron_cases is not beside the repository")
    return sorted(p for p in MEGATRON_CASES.iterdir() if (p / "model_config.yaml").is_file())


def _perturbations(doc: dict) -> dict:
    rid = next(k for k, v in doc.items() if isinstance(v, dict))
    n_logprobs = len(doc[rid]["logprobs"])
    return {
        "self": doc,
        "generated logprob +2e-3": edited(doc, _add([rid, "logprobs", n_logprobs - 5], 2e-3)),
        "prompt logprob -5e-4": edited(doc, _add([rid, "logprobs", 3], -5e-4)),
        "token 5 changed": edited(doc, _add([rid, "generated_tokens", 5], 1)),
        "latency dropped": edited(doc, lambda d: d[rid].pop("latency")),
        "extra request": edited(doc, _set(["999"], copy.deepcopy(doc[rid]))),
        "logprobs truncated": edited(doc, lambda d: d[rid]["logprobs"].pop()),
    }


def test_megatron_goldens_parity_and_report():
    for case in _megatron_case_dirs():
        golden = load_golden(case / "golden_values_dev_dgx_h100.json")
        metrics = yaml.safe_load((case / "model_config.yaml").read_text())["METRICS"]
        rid = next(iter(golden))
        n_logprobs = len(golden[rid]["logprobs"])
        prompt = n_logprobs - len(golden[rid]["generated_tokens"])
        for name, current in _perturbations(golden).items():
            result = compare(golden, current, Policy.from_suite(metrics))
            assert result.passed is megatron_verdict(golden, current, metrics), (case.name, name)
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
    assert [e["index"] for e in report["logprob_changes"]] == over
    for entry in report["logprob_changes"]:
        i = entry["index"]
        assert entry["part"] == ("prompt" if i < prompt else "generated")
        assert (entry["golden"], entry["current"]) == (g["logprobs"][i], c["logprobs"][i])
        assert entry["delta"] == c["logprobs"][i] - g["logprobs"][i]
    assert report["token_changes"][0] == {"index": divergence, "golden": g["generated_tokens"][divergence],
                                          "current": c["generated_tokens"][divergence]}
    assert report["stats"]["compared"] == comparable
    assert report["stats"]["not_comparable"] == len(g["logprobs"]) - comparable
    assert result.first_divergences == {"0": divergence} and not result.tokens_agree
    assert result.n_over_tolerance == len(over)
    assert result.max_abs_delta == max(abs(c["logprobs"][i] - g["logprobs"][i]) for i in range(comparable))
    assert result.passed is megatron_verdict(before_raw, after_raw, DEFAULT) is False


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
    golden = {"0": make_request(prompt=(-1.0, -2.0, -3.0, -4.0), tokens=(1, 2, 3, 4), generated=(-0.1, -0.2, -0.3, -0.4))}
    current = {"0": make_request(prompt=(-1.0, -2.0, -3.5, -4.0), tokens=(1, 2, 9, 9), generated=(-0.1, -0.9, -7.0, -8.0))}
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
    assert entry["token_changes"] == [{"index": 2, "golden": 3, "current": None}]
    assert entry["stats"]["compared"] == 5 and entry["stats"]["not_comparable"] == 1


def test_unequal_prompt_parts_are_not_comparable():
    golden = {"0": make_request(prompt=(-1.0, -2.0), tokens=(1, 2), generated=(-0.1, -0.2))}
    current = {"0": make_request(prompt=(-1.0, -2.0, -3.0), tokens=(1,), generated=(-0.1,))}
    result = compare(golden, current, Policy())
    assert result.requests["0"].n_compared == 0 and not result.passed
    assert "prompt parts differ" in next(c.message for c in result.checks if c.metric == "logprobs")


# --- modes, tolerances and NaN policy ----------------------------------------------------

def test_deterministic_mode_is_bit_exact():
    one_ulp = edited(BASE, _set(["0", "logprobs", 0], math.nextafter(-1.5, 0.0)))
    assert compare(BASE, one_ulp, Policy()).passed
    assert not compare(BASE, one_ulp, Policy(mode=Mode.DETERMINISTIC)).passed
    signed_zero = edited(BASE, _set(["0", "logprobs", 0], -0.0)), edited(BASE, _set(["0", "logprobs", 0], 0.0))
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
        return edited(BASE, _set(["0", "logprobs", 1], value))

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
    (DEFAULT, ["mode"], "mapping"),
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
        ("missing_request", "root['1']"): False,
        ("extra_request", "root['5']"): True,
        ("missing_field", "root['0']['latency']"): False,
        ("extra_field", "root['0']['ttft']"): False,
        ("length_change", "root['0']['logprobs']"): True,
    }
    typed = compare(BASE, edited(BASE, _set(["0", "latency"], None)), Policy()).structural_changes
    assert [(c["kind"], c["golden"], c["current"]) for c in typed] == [("type_change", "number", "null")]


def test_deepdiff_sees_only_skeletons(monkeypatch):
    seen = []

    def recording_deepdiff(t1, t2, **kwargs):
        seen.append((t1, t2))
        return original(t1, t2, **kwargs)

    original = compare_module.DeepDiff
    monkeypatch.setattr(compare_module, "DeepDiff", recording_deepdiff)
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
    current = edited(BASE, lambda d: (_add(["0", "logprobs", 0], 0.25)(d), _set(["1", "generated_tokens", 2], 7)(d)))
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
    golden = {"0": {"generated_tokens": [1] * 10, "logprobs": values}, "1": {"generated_tokens": [], "logprobs": values[:7]}}
    current = {"0": {"generated_tokens": [1] * 10, "logprobs": noisy}, "1": {"generated_tokens": [], "logprobs": values[:7]}}
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
        compare(BASE, edited(BASE, _set(["0", "logprobs", 1], None)), Policy())
    with pytest.raises(BadInput, match=r"golden: request '1': generated_tokens\[0\] is a string, expected an integer"):
        compare(edited(BASE, _set(["1", "generated_tokens", 0], "x")), BASE, Policy())
    with pytest.raises(BadInput, match="expected an object"):
        compare([], BASE, Policy())


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    metrics=st.sets(st.sampled_from(["generated_tokens", "logprobs", "generated_text"]), min_size=1),
)
def test_verdict_matches_megatron_on_random_perturbations(data, metrics):
    """Where the rules agree by design: NaN never equal, and logprobs always checked with tokens."""
    if "logprobs" in metrics:
        metrics.add("generated_tokens")
    golden = {"0": make_request(), "1": make_request(tokens=(5, 6), generated=(-0.7, -0.01), text=" e f")}
    current = copy.deepcopy(golden)
    for _ in range(data.draw(st.integers(0, 3))):
        rid = data.draw(st.sampled_from(sorted(current)))
        request = current[rid]
        change = data.draw(st.sampled_from(["noise", "token", "drop_token", "text", "drop_field", "drop_request"]))
        logprobs, tokens = request.get("logprobs", []), request.get("generated_tokens", [])
        if change == "noise" and logprobs:
            i = data.draw(st.integers(0, len(logprobs) - 1))
            logprobs[i] += data.draw(st.sampled_from([5e-4, -9.99e-4, 1e-3, 1.0001e-3, -0.3, math.nan]))
        elif change == "token" and tokens:
            tokens[data.draw(st.integers(0, len(tokens) - 1))] += 1
        elif change == "drop_token" and tokens and logprobs:
            tokens.pop()
            logprobs.pop()
        elif change == "text":
            request["generated_text"] = data.draw(st.sampled_from(["", " a", " a b c d", " q"]))
        elif change == "drop_field":
            request.pop(data.draw(st.sampled_from(sorted(request))))
        elif change == "drop_request" and len(current) > 1:
            current.pop(rid)
    metrics = sorted(metrics)
    expected = megatron_verdict(golden, current, metrics)
    event(f"megatron verdict: {'pass' if expected else 'fail'}")
    assert compare(golden, current, Policy(metrics=metrics, nan_equal=False)).passed is expected
