"""Every pair the parity test judges with Megatron-LM's comparator, each under a stable id.

One place for tests/judge/test_megatron_parity.py and tests/support/record_megatron_verdicts.py (which
records Megatron's verdict on each case in tests/data/megatron_verdicts.json). Every case is
deterministic (the generated ones come from seeded generators), and its id ends with a digest of
the three files the comparator reads, so a case whose content changes gets a new id: its old
recorded verdict is then stale and the test says so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.documents import BASE, DEFAULT, add_at, edited, make_doc, make_request, set_at

HISTORY = Path(__file__).resolve().parents[1] / "data" / "megatron_history"
GOLDEN_NAME = "golden_values_dev_dgx_h100.json"
GENERATED_CASES = 1000
GENERATED_SEED = "logitsmatch-parity"
PROJECT = Path(__file__).resolve().parents[2]


def family_toolchains(pyproject: Path) -> tuple[str, ...]:
    """The toolchains whose goldens the family's suites are judged on: the default, then the one tagged newest."""
    from logitsmatch.toolchains import default_toolchain_name, load_toolchains

    newest = [name for name, toolchain in load_toolchains(pyproject).items() if "newest" in toolchain.tags]
    return (default_toolchain_name(pyproject), *newest)


@dataclass(frozen=True)
class ParityCase:
    """A golden and a current (documents, or paths of Megatron's files) judged with these METRICS."""

    id: str
    golden: dict | Path
    current: dict | Path
    metrics: tuple[str, ...]
    intended: bool | None = None  # Megatron's verdict the case's name promises, where it promises one
    note: str = ""  # what was changed (generated cases)

    def files(self) -> tuple[bytes, bytes, bytes]:
        """The golden, current and model_config.yaml bytes Megatron's comparator reads."""
        def content(doc):
            return doc.read_bytes() if isinstance(doc, (str, os.PathLike)) else json.dumps(doc).encode()

        config = yaml.safe_dump({"MODE": "inference", "METRICS": list(self.metrics)}).encode()
        return content(self.golden), content(self.current), config


def make_case(group: str, name: str, golden, current, metrics, **extra) -> ParityCase:
    draft = ParityCase("", golden, current, tuple(metrics), **extra)
    digest = hashlib.sha256(b"\0".join(draft.files())).hexdigest()[:12]
    return ParityCase(f"{group}/{name}@{digest}", golden, current, tuple(metrics), **extra)


# --- crafted cases: one rule each --------------------------------------------------------------

TPUT = make_doc(throughput=[5.0, 100.0, 102.0, 98.0])
MEM = make_doc(**{"mem-max-allocated-bytes": 1_000_000})
# Megatron's goldens keep routing rows only for the sampled tokens; a run records every token.
ROUTED = {"0": dict(make_request(), routing_indices=[[3, 1], [5, 4]], routing_indices_token_indices=[0, 2])}
MEM_METRICS = DEFAULT + ["mem-max-allocated-bytes"]
NAMED = make_request()

# name: (golden, current, metrics, the verdict the name promises, or None)
CRAFTED = {
    "identical": (BASE, BASE, DEFAULT, True),
    "logprob within 1e-3": (BASE, edited(BASE, add_at(["0", "logprobs", 4], 9e-4)), DEFAULT, True),
    "logprob beyond 1e-3": (BASE, edited(BASE, add_at(["0", "logprobs", 1], 1.1e-3)), DEFAULT, False),
    "logprob exactly 1e-3 away": (edited(BASE, set_at(["0", "logprobs", 0], 0.0)),
                                  edited(BASE, set_at(["0", "logprobs", 0], 0.001)), DEFAULT, True),
    "rounding at the 1e-3 edge": (edited(BASE, set_at(["0", "logprobs", 0], -1.0)),
                                  edited(BASE, set_at(["0", "logprobs", 0], -1.001)), DEFAULT, None),
    "math.isclose rel_tol 1e-9 on large values": (edited(BASE, set_at(["0", "logprobs", 0], 1e7)),
                                                  edited(BASE, set_at(["0", "logprobs", 0], 1e7 + 0.005)),
                                                  DEFAULT, True),
    "token changed": (BASE, edited(BASE, set_at(["1", "generated_tokens", 1], 99)), DEFAULT, False),
    "token changed, tokens not a metric": (BASE, edited(BASE, set_at(["1", "generated_tokens", 1], 99)),
                                           ["generated_text"], True),
    "logprobs one longer": (BASE, edited(BASE, lambda d: d["0"]["logprobs"].insert(0, -3.0)), DEFAULT, False),
    "text is a prefix": (BASE, edited(BASE, set_at(["0", "generated_text"], " a b")), ["generated_text"], True),
    "text differs": (BASE, edited(BASE, set_at(["0", "generated_text"], " a x c")), ["generated_text"], False),
    "text empty": (BASE, edited(BASE, set_at(["0", "generated_text"], "")), ["generated_text"], False),
    "text differs, not a metric": (BASE, edited(BASE, set_at(["0", "generated_text"], " zzz")), DEFAULT, True),
    "latency differs": (BASE, edited(BASE, set_at(["0", "latency"], 9.0)), DEFAULT, True),
    "extra request in current": (BASE, edited(BASE, set_at(["7"], make_request())), DEFAULT, False),
    "a golden request lost": (BASE, edited(BASE, lambda d: d.pop("1")), DEFAULT, False),
    "3 of 4 golden requests lost": (make_doc(4), make_doc(1), DEFAULT, False),
    "extra non-request key in current": (BASE, edited(BASE, set_at(["foo"], 1)), DEFAULT, False),
    "extra non-request key in golden": (edited(BASE, set_at(["foo"], 1)), BASE, DEFAULT, False),
    "same non-request key in both": (edited(BASE, set_at(["foo"], 1)), edited(BASE, set_at(["foo"], 1)),
                                     DEFAULT, False),
    "named request in both": (edited(BASE, set_at(["foo"], NAMED)), edited(BASE, set_at(["foo"], NAMED)),
                              DEFAULT, True),
    "named request lost": (edited(BASE, set_at(["foo"], NAMED)), BASE, DEFAULT, False),
    "run-level key only in current": (BASE, edited(BASE, set_at(["throughput"], [1.0, 2.0])), DEFAULT, True),
    "metric absent from golden request": (edited(BASE, lambda d: d["0"].pop("logprobs")), BASE, DEFAULT, True),
    "no metric in golden request": (edited(BASE, lambda d: [d["0"].pop(k) for k in DEFAULT]), BASE, DEFAULT,
                                    False),
    "metric missing in current": (BASE, edited(BASE, lambda d: d["1"].pop("generated_tokens")), DEFAULT, False),
    "inf equals inf": (edited(BASE, set_at(["0", "logprobs", 2], -math.inf)),
                       edited(BASE, set_at(["0", "logprobs", 2], -math.inf)), DEFAULT, True),
    "inf against -inf": (edited(BASE, set_at(["0", "logprobs", 2], math.inf)),
                         edited(BASE, set_at(["0", "logprobs", 2], -math.inf)), DEFAULT, False),
    "inf against a number": (edited(BASE, set_at(["0", "logprobs", 2], -math.inf)), BASE, DEFAULT, False),
    "NaN against NaN (nan_equal off)": (edited(BASE, set_at(["0", "logprobs", 3], math.nan)),
                                        edited(BASE, set_at(["0", "logprobs", 3], math.nan)), DEFAULT, False),
    "throughput within": (TPUT, edited(TPUT, set_at(["throughput"], [1.0, 95.0, 91.0, 99.0])),
                          DEFAULT + ["throughput"], True),
    "throughput too low": (TPUT, edited(TPUT, set_at(["throughput"], [1.0, 80.0, 85.0, 90.0])),
                           DEFAULT + ["throughput"], False),
    "throughput too high": (TPUT, edited(TPUT, set_at(["throughput"], [1.0, 120.0, 130.0, 125.0])),
                            DEFAULT + ["throughput"], False),
    "throughput not a metric": (TPUT, edited(TPUT, set_at(["throughput"], [1.0, 1.0, 1.0])), DEFAULT, True),
    "throughput missing in current": (TPUT, edited(TPUT, lambda d: d.pop("throughput")), DEFAULT + ["throughput"],
                                      False),
    "memory within 5%": (MEM, edited(MEM, set_at(["mem-max-allocated-bytes"], 1_040_000)), MEM_METRICS, True),
    "memory 6% higher": (MEM, edited(MEM, set_at(["mem-max-allocated-bytes"], 1_060_000)), MEM_METRICS, False),
    "memory missing in current": (MEM, edited(MEM, lambda d: d.pop("mem-max-allocated-bytes")), MEM_METRICS, False),
    "routing reordered within a token": (ROUTED, edited(ROUTED, set_at(["0", "routing_indices"],
                                                                       [[1, 3], [9, 9], [4, 5]])),
                                         DEFAULT + ["routing_indices"], True),
    "routing differs": (ROUTED, edited(ROUTED, set_at(["0", "routing_indices"], [[1, 2], [2, 0], [4, 5]])),
                        DEFAULT + ["routing_indices"], False),
}


def crafted_cases() -> dict[str, ParityCase]:
    return {name: make_case("crafted", name, golden, current, metrics, intended=intended)
            for name, (golden, current, metrics, intended) in CRAFTED.items()}


# --- the documented differences (docs/guides/comparing.md, "Comparing files"): Megatron's side of each -------------

NAN_DOC = edited(BASE, set_at(["0", "logprobs", 3], math.nan))
ONLY_RUN_KEYS = {"throughput": [1.0, 2.0]}
THROUGHPUT_A_STRING = edited(BASE, set_at(["throughput"], "fast"))
DIFFERENCES = {
    "NaN against NaN": (NAN_DOC, NAN_DOC, DEFAULT),
    "a token divergence, logprobs within tolerance": (
        BASE, edited(BASE, set_at(["1", "generated_tokens", 0], 99)), ["logprobs"]),
    "no requests": (ONLY_RUN_KEYS, ONLY_RUN_KEYS, DEFAULT),
    "run-level value not a number": (THROUGHPUT_A_STRING, THROUGHPUT_A_STRING, DEFAULT),
    "lost request, no metrics": (BASE, edited(BASE, lambda d: d.pop("1")), []),
    "no metrics at all": (BASE, edited(BASE, set_at(["0", "generated_tokens"], [])), []),
}


def difference_cases() -> dict[str, ParityCase]:
    return {name: make_case("difference", name, *pair) for name, pair in DIFFERENCES.items()}


# --- real drift from Megatron-LM's history (tests/data/megatron_history) -------------------------


def history_folders() -> list[Path]:
    folders = sorted(p for p in HISTORY.iterdir() if p.is_dir())
    assert folders, f"{HISTORY} holds no before/after pairs"
    return folders


def history_cases() -> dict[tuple[str, str], ParityCase]:
    """(folder name, "before-after" | "before-before"): the bump as drift, and a file against itself."""
    cases = {}
    for folder in history_folders():
        before, after = folder / "before.json", folder / "after.json"
        for name, current in (("before-after", after), ("before-before", before)):
            cases[folder.name, name] = make_case("history", f"{folder.name}/{name}", before, current, DEFAULT)
    return cases


# --- Megatron's own goldens (../shared/megatron_cases) and perturbations of them -----------------

# perturbations that Megatron's comparator passes; it fails the others
GOLDEN_PERTURBATIONS_THAT_PASS = ("self", "prompt logprob -5e-4", "latency dropped")


def as_a_run_writes_it(golden: dict) -> dict:
    """A golden as a run's result: Megatron's goldens keep routing rows only for the sampled tokens
    (routing_indices_token_indices), a run records a row for every token (prompt and generated; the
    golden's rows at its token indices, its first row elsewhere). Other goldens are unchanged."""
    doc = copy.deepcopy(golden)
    for request in doc.values():
        if isinstance(request, dict) and "routing_indices_token_indices" in request:
            rows = dict(zip(request.pop("routing_indices_token_indices"), request["routing_indices"]))
            filler = request["routing_indices"][0]
            request["routing_indices"] = [rows.get(i, filler) for i in range(len(request["logprobs"]) + 1)]
    return doc


def golden_perturbations(golden: dict) -> dict[str, dict]:
    """The golden as a run writes it, and changes to it."""
    doc = as_a_run_writes_it(golden)
    rid = next(k for k, v in doc.items() if isinstance(v, dict))
    n_logprobs = len(doc[rid]["logprobs"])
    return {
        "self": doc,
        "generated logprob +2e-3": edited(doc, add_at([rid, "logprobs", n_logprobs - 5], 2e-3)),
        "prompt logprob -5e-4": edited(doc, add_at([rid, "logprobs", 3], -5e-4)),
        "token 5 changed": edited(doc, add_at([rid, "generated_tokens", 5], 1)),
        "latency dropped": edited(doc, lambda d: d[rid].pop("latency")),
        "extra request": edited(doc, set_at(["999"], copy.deepcopy(doc[rid]))),
        "request lost": edited(doc, lambda d: d.pop(rid)),
        "request renamed": edited(doc, lambda d: d.update({"999": d.pop(rid)})),
        "logprobs truncated": edited(doc, lambda d: d[rid]["logprobs"].pop()),
        "extra top-level key": edited(doc, set_at(["note"], "rerun")),
    }


def golden_cases(case_dirs: list[Path]) -> dict[tuple[str, str], ParityCase]:
    """(case folder name, perturbation): each Megatron golden against perturbations of itself, with its METRICS."""
    assert case_dirs, "no Megatron case folders"
    cases = {}
    for folder in case_dirs:
        golden = folder / GOLDEN_NAME
        metrics = yaml.safe_load((folder / "model_config.yaml").read_text())["METRICS"]
        for name, current in golden_perturbations(json.loads(golden.read_text())).items():
            cases[folder.name, name] = make_case("golden", f"{folder.name}/{name}", golden, current, metrics,
                                                 intended=name in GOLDEN_PERTURBATIONS_THAT_PASS)
    return cases


# --- the family's suites: each CPU golden as a run's result, and one toolchain's against another's --------------


def family_goldens(project: Path, toolchains: tuple[str, ...]) -> dict[str, dict[str, Path]]:
    """{suite: {toolchain: its CPU golden}} for every suite of the family (docs/family/coverage.json) and each of
    ``toolchains`` whose golden the suite has (a release without the suite's feature has none)."""
    from logitsmatch.family import family_suites

    goldens = {}
    for suite in family_suites(project):
        paths = {name: project / "golden_values" / suite / f"golden_values_cpu_{name}.json" for name in toolchains}
        goldens[suite] = {name: path for name, path in paths.items() if path.is_file()}
    return goldens


def as_megatron_golden(path: Path) -> dict:
    """A golden of ours in the layout Megatron's goldens have: its comparator reads a golden's routing rows at the
    golden's ``routing_indices_token_indices`` (and fails a golden without them), where a run, and so a golden
    recorded from one, keeps a row for every token; here every row is named. Other goldens are unchanged."""
    doc = json.loads(path.read_text())
    for request in doc.values():
        if isinstance(request, dict) and "routing_indices" in request:
            request.setdefault("routing_indices_token_indices", list(range(len(request["routing_indices"]))))
    return doc


def suite_cases(project: Path, toolchains: tuple[str, ...]) -> dict[tuple[str, str], ParityCase]:
    """(suite, "<toolchain>" | "<toolchain A> vs <toolchain B>"): a CPU golden (as Megatron keeps a golden) against
    itself as a run writes it (what ``logitsmatch run`` judges when nothing moved), and the first toolchain's golden
    against the others' results, with the suite's METRICS."""
    cases = {}
    for suite, goldens in family_goldens(project, toolchains).items():
        metrics = yaml.safe_load((project / "suites" / suite / "model_config.yaml").read_text())["METRICS"]
        names = list(goldens)
        for name in names:
            cases[suite, name] = make_case("suite", f"{suite}/{name}", as_megatron_golden(goldens[name]),
                                           goldens[name], metrics, intended=True)
        for other in names[1:]:
            pair = f"{names[0]} vs {other}"
            cases[suite, pair] = make_case("suite", f"{suite}/{pair}", as_megatron_golden(goldens[names[0]]),
                                           goldens[other], metrics)
    return cases


# --- generated cases -----------------------------------------------------------------------------

EXTRA_KEYS = [
    ("foo", 1),
    ("note", "x"),
    ("foo", {"generated_tokens": [11, 12, 13], "logprobs": [-1.5, -2.25, -0.5, -0.1, -0.2, -0.3]}),
    ("throughput", [3.0, 100.0, 100.0]),
    ("lifetime_prefill_token_count", 12),
]
CHANGES = ["noise", "noise", "token", "drop_token", "text", "drop_field", "drop_request", "add_request", "extra_key",
           "drop_key"]
GENERATED_METRICS = ["generated_tokens", "logprobs", "generated_text", "throughput"]


def _is_request(value) -> bool:
    return isinstance(value, dict) and "input_prompt" in value


def _apply(change: str, current: dict, rng: random.Random) -> bool:
    """Apply one change to ``current``; False when it has nothing to act on."""
    requests = sorted(k for k, v in current.items() if _is_request(v))
    rid = rng.choice(requests) if requests else None
    request = current[rid] if rid else {}
    logprobs, tokens = request.get("logprobs", []), request.get("generated_tokens", [])
    if change == "noise" and logprobs:
        logprobs[rng.randrange(len(logprobs))] += rng.choice([5e-4, -9.99e-4, 1e-3, 1.0001e-3, -0.3, 2.0])
    elif change == "token" and tokens:
        tokens[rng.randrange(len(tokens))] += 1
    elif change == "drop_token" and tokens and logprobs:
        tokens.pop()
        logprobs.pop()
    elif change == "text" and rid:
        request["generated_text"] = rng.choice(["", " t", " t0 u v", " q"])
    elif change == "drop_field" and request:
        request.pop(rng.choice(sorted(request)))
    elif change == "drop_request" and len(requests) > 1:
        current.pop(rid)
    elif change == "add_request":
        current[rng.choice(["7", "8", "bar"])] = make_request()
    elif change == "extra_key":
        key, value = rng.choice(EXTRA_KEYS)
        current[key] = copy.deepcopy(value)
    elif change == "drop_key" and any(not _is_request(v) for v in current.values()):
        current.pop(rng.choice(sorted(k for k, v in current.items() if not _is_request(v))))
    else:
        return False
    return True


def generated_case(index: int) -> ParityCase:
    """Generated pair ``index``: requests dropped and added, extra top-level keys, noise at the tolerance,
    token changes, dropped fields. Seeded by its index alone, so a case never depends on the others."""
    rng = random.Random(f"{GENERATED_SEED}-{index}")
    golden = {str(i): make_request(tokens=(5 + i, 6, 7 + i), text=f" t{i} u") for i in range(rng.randint(1, 4))}
    if rng.random() < 0.5:
        key, value = rng.choice(EXTRA_KEYS)
        golden[key] = copy.deepcopy(value)
    current = copy.deepcopy(golden)
    changes = [change for change in (rng.choice(CHANGES) for _ in range(rng.randint(0, 4)))
               if _apply(change, current, rng)]
    # at least one metric: with none, Megatron reads nothing past METRICS, while a malformed file
    # (e.g. "foo": 1) is bad input for logitsmatch whatever the metrics (a documented difference)
    metrics = {metric for metric in GENERATED_METRICS if rng.random() < 0.5} or {rng.choice(GENERATED_METRICS)}
    if "logprobs" in metrics:  # logprobs without tokens is a documented difference: kept out
        metrics.add("generated_tokens")
    return make_case("generated", f"{index:04d}", golden, current, sorted(metrics), note=", ".join(changes))


def generated_cases(count: int = GENERATED_CASES) -> list[ParityCase]:
    return [generated_case(index) for index in range(count)]


def all_cases(case_dirs: list[Path] | None) -> list[ParityCase]:
    """Every parity case; those on Megatron's goldens only with its case folders (``case_dirs``)."""
    cases = [*crafted_cases().values(), *difference_cases().values(), *history_cases().values(), *generated_cases(),
             *suite_cases(PROJECT, family_toolchains(PROJECT / "pyproject.toml")).values()]
    if case_dirs is not None:
        cases += golden_cases(case_dirs).values()
    return cases
