"""explain's dependency closure and its search over groups, without inference.

The unit tests build environments as records; the wheel test builds tiny real wheels (a torch-like
distribution that fails to import without its companion, plus decoys), installs them into two
folders, and searches them with a runner that imports the composed environment instead of running
a suite: the real resolve, diff, groups, closure, overlays and search, in seconds. The last tests
cover the harness inputs a package move can carry (configuration records, stand-ins, hardware class)
and how they are checked against the runs that prove the culprit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from logitsmatch.explain import environments as envs
from logitsmatch.explain.bisect import UNRESOLVED, isolate, search_bound
from logitsmatch.explain.explainer import Explainer
from logitsmatch.explain.report import culprit_lines
from logitsmatch.explain.suite_runs import Run, Settings, first_error_line


def _env(python: str, **packages) -> envs.Environment:
    distributions = {}
    for name, spec in packages.items():
        version, requires = spec if isinstance(spec, tuple) else (spec, [])
        key = name.replace("_", "-")
        distributions[key] = {"name": key, "version": version, "location": f"/{python}", "dist_info": "", "files": [],
                              "compiled": False, "requires": requires, "commit": None}
    return envs.Environment(envs.Side("x", f"/{python}/python"), python, "", distributions)


# The torch upgrade of issue 18, as installed metadata: a CPU torch without CUDA wheels against the
# registry's torch 2.9.1, which requires them (and triton) and setuptools at any version.
CUDNN = "nvidia-cudnn-cu12==9.10.2.21; platform_system == \"Linux\""
BASELINE = _env("3.11.7", torch=("2.13.0+cpu", ["setuptools>=77.0.3", "filelock"]), setuptools="80.9.0",
                filelock="3.20.0", numpy="2.4.6")
CANDIDATE = _env("3.11.7", torch=("2.9.1", ["setuptools", "filelock", "triton==3.5.1; platform_system == \"Linux\"",
                                            CUDNN, "nvidia-cublas-cu12==12.8.4.1; platform_system == \"Linux\""]),
                 setuptools="70.2.0", filelock="3.20.0", numpy="2.4.6", triton="3.5.1",
                 nvidia_cudnn_cu12=("9.10.2.21", ["nvidia-cublas-cu12"]), nvidia_cublas_cu12="12.8.4.1")


def test_a_moved_distribution_takes_what_its_metadata_requires_and_the_baseline_lacks():
    changes = envs.diff(BASELINE, CANDIDATE)
    changed = {change.name for change in changes}
    assert changed == {"torch", "setuptools", "triton", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"}
    moved, why = envs.closure(BASELINE, CANDIDATE, {"torch"}, changed)
    assert moved == {"torch", "triton", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"}
    assert why["nvidia-cudnn-cu12"] == f"torch 2.9.1 requires {CUDNN}; the baseline has none"
    assert "setuptools" not in moved  # torch 2.9.1 takes any setuptools: the baseline's stays


def test_a_move_that_breaks_a_staying_baseline_requirement_takes_that_distribution():
    """The tie the issue saw pointing the wrong way: it is setuptools that cannot move alone (the
    baseline's torch requires setuptools>=77.0.3), not torch that needs setuptools."""
    changed = {change.name for change in envs.diff(BASELINE, CANDIDATE)}
    moved, why = envs.closure(BASELINE, CANDIDATE, {"setuptools"}, changed)
    assert why["torch"] == "the baseline's torch 2.13.0+cpu requires setuptools>=77.0.3; moved, setuptools is 70.2.0"
    assert moved == {"setuptools", "torch", "triton", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"}  # torch with its own
    assert envs.closure(BASELINE, CANDIDATE, {"triton"}, changed) == ({"triton"}, {})  # nothing requires it to stay


def test_groups_hold_a_lead_with_its_requirements_and_say_why():
    groups = envs.requirement_groups(BASELINE, CANDIDATE, envs.diff(BASELINE, CANDIDATE))
    assert [(g.lead, set(g.members)) for g in groups] == [
        ("setuptools", {"setuptools"}),
        ("torch", {"torch", "triton", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"})]
    torch = groups[1]
    assert torch.label() == "torch (with 3 requirements)"
    triton = 'torch 2.9.1 requires triton==3.5.1; platform_system == "Linux"; the baseline has none'
    assert dict(torch.reasons)["triton"] == triton


def test_markers_are_evaluated_for_the_composed_interpreter_and_a_satisfied_requirement_is_no_tie():
    baseline = _env("3.11.7", app="1.0", lib="1.0", old="1")
    candidate = _env("3.11.7", app=("2.0", ["lib>=1.0", 'old==2; python_version >= "3.12"']), lib="1.1", old="2")
    changes = envs.diff(baseline, candidate)
    assert [g.members for g in envs.requirement_groups(baseline, candidate, changes)] == [("app",), ("lib",), ("old",)]
    assert envs.closure(baseline, candidate, {"app"}, {"app", "lib", "old"}) == ({"app"}, {})


def test_a_baseline_requirement_the_baseline_itself_breaks_is_no_tie():
    baseline = _env("3.11.7", a=("1", ["b>=5"]), b="1")
    candidate = _env("3.11.7", a=("1", ["b>=5"]), b="2")
    assert envs.closure(baseline, candidate, {"b"}, {"b"}) == ({"b"}, {})


# --- tiny wheels -----------------------------------------------------------------------------------

def _wheel(folder: Path, name: str, version: str, modules: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel with its METADATA, WHEEL and a RECORD of hashes."""
    info = f"{name}-{version}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                + "".join(f"Requires-Dist: {r}\n" for r in requires))
    files = {**{f"{module}/__init__.py": text for module, text in modules.items()}, f"{info}/METADATA": metadata,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: logitsmatch-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _install(wheels: list[Path], target: Path) -> Path:
    """What an installer does with a pure wheel: unpack it into site-packages (RECORD included)."""
    target.mkdir(parents=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    return target


BASE_TORCHLIKE = "from companion import kernel\n\n\ndef value():\n    return kernel()\n"
# Like torch 2.9.1's _preload_cuda_deps: the new version fails to import without its companion's new part.
NEW_TORCHLIKE = "from companion import kernel, preload\n\npreload()\n\n\ndef value():\n    return kernel() * 2\n"
BASE_COMPANION = "def kernel():\n    return 3\n"
NEW_COMPANION = ("import gpu_runtime\n\n\ndef preload():\n    assert gpu_runtime.LOADED\n\n\n"
                 "def kernel():\n    return 3\n")


def _sides(tmp_path: Path, declared: bool = True, pinned_decoy: bool = False) -> tuple[envs.Side, envs.Side]:
    """Baseline: torchlike 1.0 over companion 1.0. Candidate: torchlike 2.0 (doubles the value) requiring
    companion 2.0 (``declared``: in its metadata too), which requires gpu-runtime (absent from the
    baseline); five decoys at new versions (``pinned_decoy``: the baseline's torchlike requires
    decoy-alpha<1.1)."""
    built = tmp_path / "wheels"
    built.mkdir()
    pins = ("companion>=1,<3", "decoy-alpha<1.1") if pinned_decoy else ("companion>=1,<3",)
    baseline = [_wheel(built, "torchlike", "1.0", {"torchlike": BASE_TORCHLIKE}, pins),
                _wheel(built, "companion", "1.0", {"companion": BASE_COMPANION})]
    requires = ("companion==2.0",) if declared else ()
    candidate = [_wheel(built, "torchlike", "2.0", {"torchlike": NEW_TORCHLIKE}, requires),
                 _wheel(built, "companion", "2.0", {"companion": NEW_COMPANION}, ("gpu-runtime>=1",)),
                 _wheel(built, "gpu-runtime", "1.0", {"gpu_runtime": "LOADED = True\n"})]
    for decoy in ("alpha", "beta", "gamma", "delta", "epsilon"):
        text = {f"decoy_{decoy}": "VALUE = 1\n"}
        baseline.append(_wheel(built, f"decoy-{decoy}", "1.0", text))
        candidate.append(_wheel(built, f"decoy-{decoy}", "1.1", text))
    return (envs.Side("baseline", sys.executable, (str(_install(baseline, tmp_path / "base")),)),
            envs.Side("candidate", sys.executable, (str(_install(candidate, tmp_path / "cand")),)))


PROBE = "import torchlike, decoy_alpha; print(torchlike.value())"


def _probe(side: envs.Side) -> subprocess.CompletedProcess:
    return subprocess.run([side.python, "-c", PROBE], env=side.env(), capture_output=True, text=True, timeout=60)


def test_tiny_wheels_the_group_the_culprit_and_no_run_without_its_requirements(tmp_path):
    """A torch-like upgrade whose new version requires a companion, which requires a runtime the baseline
    lacks; five decoys. The search names the torch-like group, every configuration starts, and the runs
    stay within 2*ceil(log2 g) for g groups."""
    baseline_side, candidate_side = _sides(tmp_path)
    base_env, cand_env = envs.resolve(baseline_side), envs.resolve(candidate_side)
    changes = envs.diff(base_env, cand_env)
    changed = {change.name for change in changes}
    decoys = {f"decoy-{name}" for name in ("alpha", "beta", "gamma", "delta", "epsilon")}
    assert changed == {"torchlike", "companion", "gpu-runtime", *decoys}
    assert (_probe(baseline_side).stdout.strip(), _probe(candidate_side).stdout.strip()) == ("3", "6")

    # Without the closure, the torch-like distribution moved alone cannot start (the import failures).
    alone = envs.compose(base_env, cand_env, {"torchlike"}, tmp_path / "cache", "alone")
    failed = _probe(alone)
    assert failed.returncode != 0 and "ImportError: cannot import name 'preload'" in failed.stderr

    groups = envs.requirement_groups(base_env, cand_env, changes)
    by_lead = {group.lead: group for group in groups}
    assert set(by_lead["torchlike"].members) == {"torchlike", "companion", "gpu-runtime"} and len(groups) == 6
    assert dict(by_lead["torchlike"].reasons) == {
        "companion": "torchlike 2.0 requires companion==2.0; the baseline has 1.0",
        "gpu-runtime": "companion 2.0 requires gpu-runtime>=1; the baseline has none"}

    runs: list[tuple[set[str], str]] = []

    def members(config: frozenset[str]) -> set[str]:
        return {name for lead in config for name in by_lead[lead].members}

    def test(config: frozenset[str]) -> str:
        moved, _ = envs.closure(base_env, cand_env, members(config), changed)
        side = envs.compose(base_env, cand_env, moved, tmp_path / "cache", "+".join(sorted(moved)))
        done = _probe(side)
        outcome = "unresolved" if done.returncode else {"3": "good", "6": "bad"}.get(done.stdout.strip(), "other")
        runs.append((moved, outcome))
        return outcome

    found = isolate([group.lead for group in groups], test)
    assert found.culprits == ["torchlike"] and found.proven and not found.unresolved
    assert all(outcome != "unresolved" for _, outcome in runs)  # nothing moved without its requirements
    for moved, _ in runs:
        assert envs.ties(base_env, cand_env, moved, changed) == [], moved
        assert "torchlike" not in moved or {"companion", "gpu-runtime"} <= moved
    assert len(runs) <= search_bound(len(groups)), runs


class ImportingExplainer(Explainer):
    """The explainer with a suite run that only imports the composed environment and prints the value."""

    def run(self, side, description, moved_to_candidate, checkpoint=None):
        self.progress(description)
        done = _probe(side)
        run = Run(len(self.runs) + 1, f"probe-{len(self.runs) + 1}", description, moved_to_candidate, side, None,
                  f"exit {done.returncode}: {first_error_line(done.stderr)}" if done.returncode else None, 0.0, False)
        run.report_details["value"] = done.stdout.strip()
        self.runs.append(run)
        return run

    def judge(self, run, baseline, candidate):
        run.outcome = UNRESOLVED if run.error else {"3": "good", "6": "bad"}.get(run.report_details["value"], "other")
        return run.outcome


def _explain_packages(tmp_path, declared: bool, pinned_decoy: bool = False):
    baseline_side, candidate_side = _sides(tmp_path, declared, pinned_decoy)
    settings = Settings(Path(__file__).resolve().parents[2], "tiny", "t", baseline_side, candidate_side, None,
                        tmp_path / "work", tmp_path / "cache")
    explainer = ImportingExplainer(settings)
    base_env, cand_env = envs.resolve(baseline_side), envs.resolve(candidate_side)
    changes = envs.diff(base_env, cand_env)
    groups = envs.requirement_groups(base_env, cand_env, changes)
    explainer.bound = 2 + search_bound(len(groups))
    baseline, candidate = explainer.run(baseline_side, "baseline", []), explainer.run(candidate_side, "candidate", [])
    baseline.outcome, candidate.outcome = "good", "bad"
    report = explainer.packages(base_env, cand_env, changes, groups, baseline, candidate)
    report.pop("boundary")
    report.update(groups=[{"lead": g.lead, "members": list(g.members), "reasons": dict(g.reasons)} for g in groups],
                  differing_packages=[{"name": c.name, "baseline": c.baseline, "candidate": c.candidate}
                                      for c in changes],
                  bound={"runs": explainer.bound, "notes": explainer.bound_notes})
    return explainer, groups, report


def test_explain_names_the_group_with_the_runs_that_prove_it_within_the_bound(tmp_path, capsys):
    explainer, groups, report = _explain_packages(tmp_path, declared=True)
    assert [g["lead"] for g in report["culprit_groups"]] == ["torchlike"] and report["proof"]["proven"]
    assert report["unresolved"] == [] and explainer.bound_notes == []  # within 2 + 2*ceil(log2 g)
    assert all(run.outcome != UNRESOLVED for run in explainer.runs)
    assert len(explainer.runs) <= 2 + search_bound(len(groups)) == explainer.bound
    alone, without = report["proof"]["alone"], report["proof"]["without"]
    assert explainer.runs[alone["run"] - 1].moved_to_candidate == ["companion", "gpu-runtime", "torchlike"]
    assert "torchlike" not in explainer.runs[without["run"] - 1].moved_to_candidate
    lines = culprit_lines("tiny", report)
    assert lines[0] == ("tiny: culprit: torchlike 1.0 -> 2.0 (with its 2 requirements: companion, gpu-runtime): "
                        f"moving it alone reproduces the candidate (run {alone['run']}); everything else moved "
                        f"without it reproduces the baseline (run {without['run']})")
    assert "  group torchlike 1.0 -> 2.0 (with its 2 requirements: companion, gpu-runtime): torchlike 2.0 requires " \
           "companion==2.0; the baseline has 1.0 (and 1 more, see the report)" in lines
    progress = [line for line in capsys.readouterr().out.splitlines() if " of at most " in line]
    assert progress and all(f"of at most {explainer.bound} " in line for line in progress)

    # Is the lead itself needed? Its requirements moved without it: one more run, within the bound here.
    base_env, cand_env = envs.resolve(explainer.settings.baseline), envs.resolve(explainer.settings.candidate)
    torchlike = next(group for group in groups if group.lead == "torchlike")
    within = explainer.requirements_alone(torchlike, base_env, cand_env, {n for g in groups for n in g.members},
                                          (explainer.runs[0], explainer.runs[1]))
    assert within["outcome"] == "good" and within["moved"] == ["companion", "gpu-runtime"]
    assert explainer.bound_notes == [] and len(explainer.runs) <= explainer.bound  # the search left room for it
    report["within_group"] = within
    assert (f"  torchlike itself is needed: its requirements moved without it reproduce the baseline "
            f"(run {within['run']})") in culprit_lines("tiny", report)


def test_a_decoy_the_baseline_pins_moves_only_with_the_culprit_and_is_not_blamed(tmp_path):
    """The setuptools shape: the baseline's torchlike requires decoy-alpha<1.1, so decoy-alpha 1.1 moves only
    with torchlike. torchlike is the culprit; the run of everything else without it cannot exist, and the
    report says why instead of blaming decoy-alpha."""
    explainer, groups, report = _explain_packages(tmp_path, declared=True, pinned_decoy=True)
    assert [g["lead"] for g in report["culprit_groups"]] == ["torchlike"] and report["unresolved"] == []
    assert (
        report["ties"]["torchlike"]
        == "the baseline's torchlike 1.0 requires decoy-alpha<1.1; moved, decoy-alpha is 1.1"
    )
    assert report["proof"]["without"]["impossible"] == "a tie takes it along"
    line = culprit_lines("tiny", report)[0]
    assert line.endswith("everything else cannot move without it: a tie takes it along (not proven)"), line
    assert len(explainer.runs) <= explainer.bound


def test_an_undeclared_companion_is_unresolved_and_named_with_its_error(tmp_path):
    """Metadata that misses a requirement: the configurations that move torchlike without its companion
    cannot start; they are reported as unresolved with their error, never as evidence, and each costs
    at most one further run, which the bound states."""
    explainer, groups, report = _explain_packages(tmp_path, declared=False)
    assert report["unresolved"], report
    for unresolved in report["unresolved"]:
        assert "torchlike" in unresolved["moved"] and "companion" not in unresolved["moved"]
        assert unresolved["error"].endswith("ImportError: cannot import name 'preload' from 'companion' "
                                            f"({unresolved['error'].split('(')[-1]}")
    assert {"torchlike", "companion"} <= {m for g in report["culprit_groups"] for m in g["members"]}
    added = sum(int(note.split(":")[0]) for note in explainer.bound_notes)
    assert explainer.bound == 2 + search_bound(len(groups)) + added
    assert len(explainer.runs) <= explainer.bound
    lines = culprit_lines("tiny", report)
    assert any(line.startswith("  unresolved (run ") and "cannot import name 'preload'" in line for line in lines)


# --- what the harness set is a harness input ------------------------------------------------------

def test_a_configuration_record_names_fields_off_their_default():
    from dataclasses import dataclass, field

    from logitsmatch.rank.config_record import dataclass_record

    @dataclass
    class Config:
        num_layers: int
        dispatcher: str = "nvls"
        scales: list = field(default_factory=lambda: [1.0])
        activation: object = None

    record = dataclass_record(Config(2, dispatcher="nccl", activation=_wheel))
    assert record["values"] == {"num_layers": 2, "dispatcher": "nccl", "scales": [1.0],
                                "activation": f"{__name__}._wheel"}
    assert record["not_default"] == ["num_layers", "dispatcher", "activation"]


def test_config_differences_compare_shared_fields_and_name_a_new_field_off_its_default():
    from logitsmatch.explain.harness import config_differences

    older = {"values": {"hidden_size": 64, "moe_router_topk": 2}, "not_default": ["hidden_size", "moe_router_topk"]}
    newer = {"values": {"hidden_size": 64, "moe_router_topk": 4, "inference_moe_token_dispatcher_type": "nccl",
                        "new_default_field": False}, "not_default": ["hidden_size", "moe_router_topk",
                                                                     "inference_moe_token_dispatcher_type"]}
    assert config_differences(older, newer) == [
        "inference_moe_token_dispatcher_type: 'nccl' on the candidate (not that release's default), "
        "a field the baseline's lacks", "moe_router_topk: 2 vs 4"]
    assert config_differences(None, newer) == []  # a run from before the record: nothing to compare


def _run_with(tmp_path: Path, index: int, outcome: str, stand_ins: list[str], dispatcher: str,
              hardware_class: str = "x86_64-amd-avx2-mkl") -> Run:
    result = tmp_path / f"run{index}" / "result.json"
    result.parent.mkdir()
    result.write_text("{}")
    provenance = {"stand_ins": stand_ins, "harness_inputs": {"adapter": "Mcore017", "hardware_class": hardware_class}}
    (result.parent / "result.provenance.json").write_text(json.dumps(provenance))
    config = {"values": {"inference_moe_token_dispatcher_type": dispatcher}, "not_default": []}
    (result.parent / "inputs.json").write_text(json.dumps({"ranks": [{"transformer_config": config}]}))
    run = Run(index, f"r{index}", "x", [], envs.Side("x", sys.executable), result, None, 0.0, False)
    run.outcome = outcome
    return run


def test_a_stand_in_that_differs_is_checked_against_the_runs_that_prove_the_culprit(tmp_path):
    """The triton case of issue 18: the candidate's run swaps a stand-in. A run that carries the candidate's
    stand-ins and gives the baseline's result clears the stand-in; a configuration that follows the
    culprit in every run is said to be inseparable from it."""
    from logitsmatch.explain.harness import check_harness_differences, harness_differences

    triton = ["megatron triton KV-append -> pure-torch"]
    baseline = _run_with(tmp_path, 1, "good", [], "nvls")
    candidate = _run_with(tmp_path, 2, "bad", triton, "nccl", hardware_class="x86_64-intel-avx512-mkl")
    alone = _run_with(tmp_path, 3, "bad", [], "nccl")
    without = _run_with(tmp_path, 4, "good", triton, "nvls")
    differences = harness_differences(baseline, candidate)
    assert [d["what"] for d in differences] == ["stand-ins", "transformer config", "hardware class"]
    assert differences[2]["detail"].startswith("x86_64-amd-avx2-mkl vs x86_64-intel-avx512-mkl")
    check_harness_differences(differences, (baseline, candidate), [baseline, candidate, alone, without])
    assert differences[0]["check"] == ("run 4 has the candidate's stand-ins and reproduces the baseline: "
                                       "it does not explain the drift")
    assert differences[1]["check"].startswith("it follows the culprit: no run has one without the other")
    assert "check" not in differences[2]


def test_the_record_of_a_real_transformer_config_is_plain_data():
    """The worker writes this for every rank (needs megatron-core: the test venv has it)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    from logitsmatch.rank.config_record import dataclass_record

    record = dataclass_record(TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4))
    assert json.loads(json.dumps(record)) == record
    assert record["values"]["ffn_hidden_size"] == 256  # derived in __post_init__: off the field's default
    assert {"num_layers", "hidden_size", "ffn_hidden_size"} <= set(record["not_default"])
    assert "0x" not in json.dumps(record)  # no object addresses: equal configurations give equal records


def test_an_unresolved_run_is_named_by_the_exception_its_traceback_ends_with():
    stderr = ("[logitsmatch] launching 8 ranks\nTraceback (most recent call last):\n"
              '  File "torch/__init__.py", line 292, in _preload_cuda_deps\n'
              "    raise ValueError(f\"{lib_folder} not found in the system path {sys.path}\")\n"
              "ValueError: libcudnn.so.*[0-9] not found in the system path ['/x']\n")
    assert first_error_line(stderr) == "ValueError: libcudnn.so.*[0-9] not found in the system path ['/x']"
    assert first_error_line("[logitsmatch] error: rank 3 failed before serving\nbye\n").endswith(
        "rank 3 failed before serving"
    )
    assert first_error_line("") == "no output"
    ranks = ("logitsmatch run: error: writing the synthetic checkpoint failed (phase 'weights'):\n"
             "[rank0]:   File \"strategies/torch.py\", line 1061, in get_async_strategy\n"
             "[rank0]: ModuleNotFoundError: nvidia-resiliency-ext package is not installed.\n")
    assert first_error_line(ranks) == "[rank0]: ModuleNotFoundError: nvidia-resiliency-ext package is not installed."
