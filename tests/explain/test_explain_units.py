"""explain's parts without megatron-core: the searches, the environment algebra, localization, reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from logitsmatch.explain import environments as envs
from logitsmatch.explain.bisect import ddmin, fallback_bound, first_bad, isolate, search_bound
from logitsmatch.judge.localize import localize, read_capture

# --- delta debugging ---------------------------------------------------------------------------

def _oracle(culprits: set[str], log: list):
    def test(subset: frozenset[str]) -> str:
        log.append(subset)
        return "bad" if culprits <= subset else "good"
    return test


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 13, 16, 31])
def test_isolate_finds_one_culprit_and_its_proof_within_two_tests_per_halving(n):
    changes = [f"p{i:02d}" for i in range(n)]
    for culprit in changes:
        log: list = []
        found = isolate(changes, _oracle({culprit}, log))
        assert found.culprits == [culprit] and found.proven and not found.notes
        assert found.alone == {culprit} and found.without == set(changes) - {culprit}
        assert len(log) == len(set(log)) <= search_bound(n), (culprit, len(log))


def test_isolate_finds_two_interacting_culprits_and_says_the_bound_did_not_hold():
    changes = [f"p{i}" for i in range(8)]
    log: list = []
    told: list = []
    found = isolate(changes, _oracle({"p1", "p6"}, log), announce=lambda why, runs: told.append((why, runs)))
    assert sorted(found.culprits) == ["p1", "p6"] and found.proven
    assert len(told) == 1 and "no proof for one culprit" in told[0][0] and told[0][1] == fallback_bound(8)
    assert len(log) <= search_bound(8) + fallback_bound(8)


def test_isolate_never_runs_a_set_twice_and_treats_other_and_unresolved_as_not_reproducing():
    calls: list = []

    def test(subset):
        calls.append(subset)
        if subset == frozenset({"a"}):
            return "unresolved"
        return "bad" if "b" in subset else "other"

    found = isolate(["a", "b", "c", "d"], test)
    assert found.culprits == ["b"] and found.unresolved == [{"a"}]
    assert not found.proven  # everything but b gives neither side's result: something else moves it too
    assert len(calls) == len(set(calls))


@pytest.mark.parametrize("n", [2, 3, 4, 8, 13])
def test_an_unresolved_configuration_is_no_evidence_and_costs_one_run(n):
    """The culprit needs a companion: any configuration that moves one without the other cannot start
    (what closure prevents, should a tie be missed). The answer stays right; each unresolved
    configuration costs at most one run beyond the bound."""
    changes = [f"p{i:02d}" for i in range(n)]
    for culprit in changes:
        companion = changes[(changes.index(culprit) + 1) % n]
        if companion == culprit:
            continue
        log: list = []

        def test(subset, culprit=culprit, companion=companion, log=log):
            log.append(subset)
            if (culprit in subset) != (companion in subset):
                return "unresolved"
            return "bad" if culprit in subset else "good"

        told: list = []
        found = isolate(changes, test, announce=lambda why, runs, told=told: told.append(runs))
        assert set(found.culprits) <= {culprit, companion} and culprit in found.culprits
        assert found.outcomes[found.alone] == "bad" and found.outcomes.get(found.without, "good") == "good"
        assert all(found.outcomes[config] == "unresolved" for config in found.unresolved)
        assert len(log) <= search_bound(n) + len(found.unresolved) + (fallback_bound(n) if found.notes else 0)


def test_a_tie_that_drags_the_culprit_along_never_blames_the_dragging_group():
    """setuptools 70 moves only with torch (the baseline's torch requires setuptools>=77): every
    configuration with setuptools moves torch too. The culprit is torch; setuptools is not blamed, and
    the missing second proof run is said."""
    ties = {"setuptools": {"setuptools", "torch"}}

    def expand(config):
        return frozenset(set(config).union(*(ties.get(unit, {unit}) for unit in config)))

    log: list = []

    def test(config):
        log.append(config)
        return "bad" if "torch" in expand(config) else "good"

    told: list = []
    found = isolate(["setuptools", "torch"], test, expand, lambda why, runs: told.append(why))
    assert found.culprits == ["torch"] and "a tie takes it along" in found.notes[0]
    assert not any("ddmin" in why for why in told) and len(log) <= search_bound(2)
    assert ddmin(["setuptools", "torch"], test, expand) == ["torch"]


def test_ddmin_reduces_only_on_bad():
    outcomes = {frozenset({"a", "b"}): "unresolved", frozenset({"c", "d"}): "good"}
    tried: list = []

    def run(config):
        tried.append(config)
        return outcomes.get(config, "bad" if {"b", "c"} <= config else "other")

    assert sorted(ddmin(["a", "b", "c", "d"], run)) == ["b", "c"]


@pytest.mark.parametrize("count", [2, 3, 5, 9, 17])
def test_first_bad_is_git_bisect(count):
    commits = [f"c{i}" for i in range(count)]
    for bad_from in range(1, count):
        tested: list = []

        def test(sha, bad_from=bad_from, tested=tested):
            tested.append(sha)
            return "bad" if int(sha[1:]) >= bad_from else "good"

        found, skipped = first_bad(commits, test)
        assert found == f"c{bad_from}" and skipped == []
        assert len(tested) <= math.ceil(math.log2(count - 1)) if count > 2 else not tested


def test_first_bad_skips_commits_that_do_not_run():
    commits = [f"c{i}" for i in range(9)]

    def test(sha):
        number = int(sha[1:])
        return "unresolved" if number in (4, 5) else ("bad" if number >= 5 else "good")

    found, skipped = first_bad(commits, test)
    assert found is None and set(skipped) == {"c4", "c5"}  # the boundary lies among skipped commits
    found, skipped = first_bad(
        commits, lambda sha: "unresolved" if sha == "c3" else "bad" if int(sha[1:]) >= 6 else "good"
    )
    assert found == "c6"


@pytest.mark.parametrize("runs_from", [1, 3, 40, 64, 99, 200])
def test_a_start_that_cannot_run_moves_to_the_first_commit_that_runs(runs_from):
    """The merge base of two release branches may need what the environment lacks: the search probes forward at
    offsets 1, 2, 4, ..., bisects between the last probe that could not run and the first that ran, and starts at
    the first commit that runs, saying which could not and why."""
    from logitsmatch.explain.explainer import Explainer
    from logitsmatch.explain.gitsource import Commit

    commits = [Commit(f"{i:040x}", f"commit {i}") for i in range(100)]
    tested: list = []
    search: dict = {"skipped": [{"sha": commits[0].sha, "why": "ModuleNotFoundError: resiliency is not installed"}]}

    def test(sha):
        tested.append(int(sha, 16))
        if int(sha, 16) < runs_from:
            search["skipped"].append({"sha": sha, "why": "ModuleNotFoundError: resiliency is not installed"})
            return "unresolved"
        return "good"

    explainer = Explainer.__new__(Explainer)
    explainer.bound, explainer.bound_notes = 2, []
    first, outcome = explainer.first_runnable(commits, test, search)
    assert len(tested) <= explainer.bound - 2 <= 7 + 5  # every probe counted in the stated bound
    assert "resiliency is not installed" in explainer.bound_notes[0]
    if runs_from > 64:  # no probe (1, 2, ..., 64) runs
        assert (first, outcome) == (0, "unresolved") and "start_unrunnable" not in search
        assert tested == [1, 2, 4, 8, 16, 32, 64]
        return
    assert (first, outcome) == (runs_from, "good") and len(set(tested)) == len(tested)
    note = search["start_unrunnable"]["note"]
    assert note.startswith(f"the first {runs_from} commit(s) from {commits[0].short} cannot run here (")
    assert note.endswith(f"at {commits[runs_from].short} 'commit {runs_from}', the first that runs")


# --- environments --------------------------------------------------------------------------------

def _env(python: str, **packages) -> envs.Environment:
    distributions = {}
    for name, spec in packages.items():
        version, requires, compiled = (spec + (None, False))[:3] if isinstance(spec, tuple) else (spec, None, False)
        distributions[name.replace("_", "-")] = {
            "name": name.replace("_", "-"),
            "version": version,
            "location": f"/{python}",
            "dist_info": "",
            "files": [],
            "compiled": compiled,
            "requires": requires or [],
            "commit": None,
        }
    return envs.Environment(envs.Side("x", f"/{python}/python"), python, "", distributions)


def test_diff_lists_every_differing_distribution_and_the_interpreter_but_not_the_harness():
    a = _env("3.11.7", torch="2.13.0", numpy="1.26.4", logitsmatch="0.1.0", only_a="1")
    b = _env("3.12.1", torch="2.13.0", numpy="2.4.6", logitsmatch="0.2.0", only_b="1")
    changes = {c.name: (c.baseline, c.candidate) for c in envs.diff(a, b)}
    assert changes == {
        "python": ("3.11.7", "3.12.1"),
        "numpy": ("1.26.4", "2.4.6"),
        "only-a": ("1", None),
        "only-b": (None, "1"),
    }


def test_a_declared_requirement_moves_packages_together_and_says_why():
    """megatron-core 0.15.3 requires numpy<2: numpy 2 cannot move without megatron-core; the reverse can."""
    a = _env("3.11.7", megatron_core=("0.15.3", ["numpy<2.0.0", 'wandb; extra == "mlm"']), numpy="1.26.4")
    b = _env("3.11.7", megatron_core=("0.16.1", ["numpy"]), numpy="2.4.6")
    changed = {"megatron-core", "numpy"}
    moved, why = envs.closure(a, b, {"numpy"}, changed)
    assert moved == changed and "megatron-core 0.15.3 requires numpy<2.0.0" in why["megatron-core"]
    assert envs.closure(a, b, {"megatron-core"}, changed) == ({"megatron-core"}, {})


def test_the_interpreter_takes_compiled_packages_with_it():
    a = _env("3.11.7", torch=("2.13.0", [], True), einops="0.8.1")
    b = _env("3.12.1", torch=("2.14.1", [], True), einops="0.8.2")
    changed = {"python", "torch", "einops"}
    moved, why = envs.closure(a, b, {"python"}, changed)
    assert moved == {"python", "torch"} and "interpreter" in why["torch"]
    assert envs.closure(a, b, {"einops"}, changed)[0] == {"einops"}


def test_compose_overlays_exactly_the_moved_distributions(tmp_path):
    """A real package of this interpreter moved by overlay: the composed side imports the overlay's copy."""
    here = envs.resolve(envs.Side("here", sys.executable))
    entry = dict(here.distributions["pyyaml"])
    moved = {**here.distributions, "pyyaml": {**entry, "version": entry["version"] + "+x"}}
    other = envs.Environment(here.side, here.python, here.abi, moved)
    side = envs.compose(here, other, {"pyyaml"}, tmp_path, "pyyaml-moved")
    assert len(side.pythonpath) == 1 and side.pythonpath[0].startswith(str(tmp_path / "overlays"))
    probe = subprocess.run(
        [side.python, "-c", "import yaml; print(yaml.__file__)"], env=side.env(), capture_output=True, text=True
    )
    assert probe.stdout.startswith(side.pythonpath[0]), probe.stderr
    again = envs.compose(here, other, {"pyyaml"}, tmp_path, "again")
    assert again.pythonpath == side.pythonpath  # materialised once, reused


# --- localization ----------------------------------------------------------------------------------

def _capture(folder, outputs: dict[str, np.ndarray], steps=((0, 5, "ids"),), ranks=(0, 1), shard=None):
    folder.mkdir(parents=True)
    import hashlib

    for rank in ranks:
        lines = [{"kind": "header", "format": 1, "rank": rank}]
        values = {}
        for step, active, ids in steps:
            lines.append(
                {"kind": "step", "step": step, "active_tokens": active, "valid_ids_sha256": ids, "padded_tokens": 8}
            )
            for order, (name, array) in enumerate(outputs.items()):
                data = array if not (shard and name in shard and rank == 1) else shard[name]
                key = f"v{len(values):05d}"
                if rank == 0:
                    values[key] = data
                lines.append(
                    {
                        "kind": "output",
                        "step": step,
                        "order": order,
                        "name": name,
                        "output": "0",
                        "shape": list(data.shape),
                        "valid_shape": list(data.shape),
                        "dtype": "float32",
                        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
                        "valid_sha256": hashlib.sha256(data.tobytes()).hexdigest(),
                        "values": key if rank == 0 else None,
                    }
                )
        (folder / f"rank-{rank}.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        if rank == 0:
            np.savez(folder / f"rank-{rank}.npz", **values)
    return read_capture(folder)


def test_localize_names_the_first_moving_module_and_the_first_beyond_tolerance(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = {"embedding": x, "layers.0.linear_qkv": x + 1, "layers.0.linear_proj": x + 2, "output_layer": x + 3}
    b = dict(a)
    b["layers.0.linear_proj"] = np.nextafter(a["layers.0.linear_proj"], np.float32(np.inf))  # 1 ulp
    b["output_layer"] = a["output_layer"] + np.float32(0.01)
    result = localize(_capture(tmp_path / "a", a), _capture(tmp_path / "b", b))
    assert result.first_bitwise.name == "layers.0.linear_proj" and result.first_bitwise.max_abs_delta < 1e-5
    assert result.first_beyond_tolerance.name == "output_layer"
    assert [row.differs for row in result.rows] == [False, False, True, True]


def test_localize_sees_a_shard_that_moved_on_another_rank_only(tmp_path):
    x = np.ones((2, 2), dtype=np.float32)
    a = _capture(tmp_path / "a", {"m1": x, "m2": x})
    b = _capture(tmp_path / "b", {"m1": x, "m2": x}, shard={"m1": x * 2})
    first = localize(a, b).first_bitwise
    assert first.name == "m1" and first.ranks_differing == 1 and first.max_abs_delta == 0.0


def test_localize_refuses_runs_whose_steps_hold_different_tokens(tmp_path):
    x = np.ones((2, 2), dtype=np.float32)
    a = _capture(tmp_path / "a", {"m": x}, steps=((0, 175, "s"),))
    b = _capture(tmp_path / "b", {"m": x * 3}, steps=((0, 129, "t"),))
    result = localize(a, b)
    assert result.first_bitwise is None and "different tokens" in result.schedule_problem


def test_localize_cli_table_json_and_png(tmp_path):
    from support import run_logitsmatch

    x = np.ones((2, 2), dtype=np.float32)
    _capture(tmp_path / "a" / "capture", {"m1": x, "m2": x})
    _capture(tmp_path / "b" / "capture", {"m1": x, "m2": x * 2})
    done = run_logitsmatch("localize", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "l.json"),
                           "--png", str(tmp_path / "l.png"), "--markdown", str(tmp_path / "l.md"))
    assert done.returncode == 1, done.stderr
    assert "first moving module m2 (prefill, max |Δ| 1)" in done.stdout
    assert json.loads((tmp_path / "l.json").read_text())["first_bitwise"]["name"] == "m2"
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_logitsmatch("localize", str(tmp_path), str(tmp_path / "b"))
    assert bad.returncode == 2 and "not a capture" in bad.stderr and "Traceback" not in bad.stderr


def test_identity_ignores_the_local_version_megatron_derives_from_the_surrounding_checkout():
    """0.18's package_info appends `git rev-parse --short HEAD` of its install folder's repository."""
    from logitsmatch.explain.harness import identity_mismatch

    assert identity_mismatch({"metadata_version": "0.18.0", "package_info_version": "0.18.0+7a807a4"}) is None
    assert identity_mismatch({"metadata_version": "0.16.1", "package_info_version": "0.16.1"}) is None
    moved = identity_mismatch({"metadata_version": "0.16.1", "package_info_version": "0.17.0rc0+abc", "file": "x"})
    assert moved == "imports 0.17.0rc0+abc (x) while its dist metadata says 0.16.1"


def test_an_empty_localization_plot_says_why(tmp_path):
    """The MoE release step's captures hold different batches: the PNG names that instead of showing bare axes."""
    from logitsmatch.judge.localize import Localization, ModuleRow
    from logitsmatch.judge.policy import Policy
    from logitsmatch.render.localize import empty_plot_note, plot

    tolerance = Policy(mode="deterministic")
    batches = Localization([], tolerance, schedule_problem="step 2 holds other tokens (batch 5 vs 6 requests)")
    assert empty_plot_note(batches, []) == ("Nothing to plot: the captures are not comparable.\n"
                                            "step 2 holds other tokens (batch 5 vs 6 requests)")
    equal = Localization([ModuleRow(0, 0, "embedding", "output", [4, 8], 8, 0, 0.0, False)], tolerance)
    assert empty_plot_note(equal, [0.0]) == "Flat at the floor: all 1 module outputs are bitwise equal."
    assert empty_plot_note(Localization([], tolerance), []).startswith("Nothing to plot: the two captures share")
    moved = Localization([ModuleRow(0, 0, "embedding", "output", [4, 8], 8, 1, 1e-6, False)], tolerance)
    assert empty_plot_note(moved, [1e-6]) == ""
    plot(batches, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_says_the_runs_were_served_by_different_engines_and_localizes_across_them(tmp_path):
    """Step 5 on two runs whose coordinator gave the request to the other engine, with a module that moves on
    that engine: the report says exactly that the engines differ (not "a batch schedule, not a module") and names
    the first moving module, aligned by prefix across the engines."""
    from types import SimpleNamespace

    from logitsmatch.explain.first_module import FirstModule
    from logitsmatch.explain.report import headline
    from support import require_toolchain_module

    require_toolchain_module("torch")
    from support.toy_capture import run_on_engines

    run_on_engines(tmp_path / "good" / "capture", {7: 0, 8: 0})
    run_on_engines(tmp_path / "bad" / "capture", {7: 1, 8: 1}, plant_engine=1)
    good, bad = (SimpleNamespace(result=tmp_path / side / "result.json") for side in ("good", "bad"))
    step = FirstModule.__new__(FirstModule)  # step 5 reads only the two runs' captures
    report = step.localization(good, bad)
    assert report["first_module"]["name"] == "mix" and report["first_module"]["aligned_by"] == "prefixes"
    lines = headline("suite", {**report, "verdict": "drift", "proof": {}})
    module_lines = [line.strip() for line in lines if "module" in line]
    assert module_lines[0].startswith("first moving module mix (prefill, max |Δ| ")
    assert "engine 0 vs engine 1" in module_lines[0]
    assert module_lines[1].startswith("module: not aligned step by step: the two runs were served by different "
                                      "data-parallel engines: request 7 by engine 0 vs engine 1, request 8 by engine 0 "
                                      "vs engine 1")
    assert not any("batch schedule" in line for line in lines)
