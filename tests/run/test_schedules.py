"""Request schedules as a run option (logitsmatch.schedules): parsing, labels, the plan, and invariance over them.

No engine runs here; the real schedules run in tests/inference/test_schedule_invariance.py and docs/invariance/.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logitsmatch import schedules
from logitsmatch.cli import main as cli_main
from logitsmatch.errors import BadInput
from logitsmatch.layouts import parse as parse_layout
from logitsmatch.run.plan import build_plan, synthetic_checkpoint, tokenizer_spec
from logitsmatch.run.platforms import get_platform
from logitsmatch.suites import load_suite
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, golden_file
from support.published_results import publish, shifted


def invariance_cli(*args: str) -> int:
    """``logitsmatch invariance`` of the tiny suite on the default toolchain, in this process."""
    return cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, *args])


@pytest.mark.parametrize("text, expected", [("together", ["together"]), (" alone , forward ", ["alone", "forward"]),
                                            (",".join(schedules.SCHEDULES), list(schedules.SCHEDULES))])
def test_schedules_parse(text, expected):
    assert schedules.parse(text) == expected


@pytest.mark.parametrize("text, message", [("", "names no schedule"), ("alone,alone", "listed twice"),
                                           ("together,sideways", "unknown schedule 'sideways'")])
def test_bad_schedules_are_bad_input(text, message):
    with pytest.raises(BadInput, match=message):
        schedules.parse(text)


def test_labels_name_the_schedule_and_together_is_the_plain_label(project):
    suite = load_suite(project, TINY_SUITE)
    label = lambda **kw: get_platform("cpu", **kw).label(suite.model_args, suite.world_size)  # noqa: E731
    assert label() == label(schedule="together") == "cpu"
    assert label(schedule="alone") == "cpu-sched-alone-fp32"
    assert label(schedule="forward", layout=parse_layout("tp1")) == "cpu-tp1-sched-forward-fp32"
    assert label(layout=parse_layout("tp8"), schedule="mixed") == "cpu-sched-mixed-fp32"  # tp8 is the suite's own
    assert get_platform("cpu", schedule="alone").configured(batch_invariant=True).label(suite.model_args) == (
        "cpu-sched-alone-bim-fp32")
    with pytest.raises(BadInput, match="unknown schedule"):
        get_platform("cpu", schedule="sideways")


def plan_of(project, schedule: str) -> dict:
    suite = load_suite(project, TINY_SUITE)
    tokenizer = tokenizer_spec(suite, project, False, None)
    plan, _ = build_plan(suite, get_platform("cpu", schedule=schedule), synthetic_checkpoint(suite, project, tokenizer),
                         project, tokenizer, "127.0.0.1")
    return plan


def test_the_plan_carries_what_the_client_submits(project):
    prompts = load_suite(project, TINY_SUITE).prompts
    together, alone, reverse = (plan_of(project, name) for name in ("together", "alone", "reversed"))
    assert [item["prompt"] for item in together["schedule"]["submit"]] == prompts
    assert [item["request_id"] for item in reverse["schedule"]["submit"]] == [3, 2, 1, 0]
    assert together["inference"]["hold_requests"] == 4 and alone["inference"]["hold_requests"] is None
    assert alone["schedule"]["one_at_a_time"] and not together["schedule"]["one_at_a_time"]
    assert together["inference"]["enable_chunked_prefill"] is False and together["inference"]["max_tokens"] == 16384


def test_mixed_interleaves_seeded_extras_that_are_not_written(project):
    prompts = load_suite(project, TINY_SUITE).prompts
    mixed = plan_of(project, "mixed")["schedule"]
    assert [item["request_id"] for item in mixed["submit"]] == [0, None, 1, None, 2, None, 3]
    extras = [item["prompt"] for item in mixed["submit"] if item["request_id"] is None]
    assert extras == schedules.extra_prompts() and [len(text.split()) for text in extras] == [3, 57, 160]
    assert not set(extras) & set(prompts)
    assert mixed["mixed"] == {"seed": schedules.MIXED_SEED, "extra_words": [3, 57, 160]}
    assert plan_of(project, "mixed")["inference"]["hold_requests"] == 7  # one engine adds all seven together


def test_chunked_prefill_at_a_small_chunk(project):
    plan = plan_of(project, "chunked")
    assert plan["inference"]["enable_chunked_prefill"] is True
    assert plan["inference"]["max_tokens"] == schedules.CHUNK_TOKENS == plan["inference"]["context_max_requests"]
    assert plan["schedule"]["chunked_prefill_tokens"] == schedules.CHUNK_TOKENS
    golden = json.loads(golden_file(TINY_SUITE).read_text())
    prompt_tokens = [len(golden[key]["logprobs"]) + 1 - len(golden[key]["generated_tokens"]) for key in "0123"]
    assert max(prompt_tokens) > 2 * schedules.CHUNK_TOKENS and sum(prompt_tokens) > schedules.CHUNK_TOKENS


def test_forward_runs_no_engine(project):
    assert plan_of(project, "forward")["schedule"]["engine"] is False


@pytest.fixture
def results(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(tmp_path / "results"))
    return load_suite(project, TINY_SUITE), json.loads(golden_file(TINY_SUITE).read_text()), tmp_path


def publish_schedule(project, root, suite, schedule: str, document: dict, layout: str = "tp8"):
    """A result of ``schedule`` published where `logitsmatch run --schedule` publishes it."""
    staged = publish(project, root.parent / "staged" / f"{layout}-{schedule}", suite, layout, document)
    label = get_platform("cpu", layout=parse_layout(layout), schedule=schedule).label(
        suite.model_args, suite.world_size
    )
    target = root / suite.name / label / DEFAULT_TOOLCHAIN
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.parent.rename(target)
    return target / "result.json"


def test_schedule_table_names_the_pair_that_moved(results, project, capsys):
    suite, golden, tmp_path = results
    root = tmp_path / "results"
    publish_schedule(project, root, suite, "together", golden)
    publish_schedule(project, root, suite, "alone", shifted(golden, 3e-4))
    publish_schedule(project, root, suite, "forward", shifted(golden, 2e-6))
    out = tmp_path / "out"
    code = invariance_cli("--schedules", "together,alone,forward", "--no-run", "--out", str(out))
    printed = capsys.readouterr().out
    assert (
        code == 1
        and "NOT INVARIANT: 4 of 9 ordered pairs beyond tolerance (alone->forward, alone->together," in printed
    )
    report = json.loads((out / "invariance.json").read_text())
    assert report["table"]["names"] == ["together", "alone", "forward"]
    assert report["table"]["cells"]["together"]["forward"]["passed"]
    assert "--schedules together,alone,forward" in report["command"]
    markdown = (out / "invariance.md").read_text()
    assert markdown.startswith("# Schedule invariance") and "| schedule | ranks |" in markdown
    assert "mixed = interleaved with extra prompts of 3, 57 and 160 words" in markdown


def test_layouts_times_schedules_is_the_product(results, project, capsys):
    suite, golden, tmp_path = results
    root = tmp_path / "results"
    for layout in ("tp8", "tp1"):
        for schedule in ("together", "alone"):
            publish_schedule(project, root, suite, schedule, shifted(golden, 1e-6 if layout == "tp1" else 0), layout)
    code = invariance_cli("--layouts", "tp8,tp1", "--schedules", "together,alone", "--no-run",
                          "--out", str(tmp_path / "out"))
    assert code == 0, capsys.readouterr()
    report = json.loads((tmp_path / "out" / "invariance.json").read_text())
    assert report["table"]["names"] == ["tp8/together", "tp8/alone", "tp1/together", "tp1/alone"]
    assert "INVARIANT: 4 layout/schedules, every pair within tolerance" in capsys.readouterr().out


def test_a_schedule_the_release_cannot_run_is_marked_not_failed(results, project, capsys, monkeypatch):
    """exit 4 of `logitsmatch run --schedule chunked` (a release without chunked prefill): the cell is marked, the
    table is judged over the rest."""
    from logitsmatch.run import freshness

    suite, golden, tmp_path = results
    publish_schedule(project, tmp_path / "results", suite, "together", golden)
    publish_schedule(project, tmp_path / "results", suite, "alone", golden)
    ran = []

    def run(command, env):
        ran.append(command)
        return subprocess.CompletedProcess(command, 4)

    monkeypatch.setattr(freshness.subprocess, "run", run)
    code = invariance_cli("--schedules", "together,alone,chunked", "--out", str(tmp_path / "out"))
    captured = capsys.readouterr()
    assert code == 0, captured
    assert ran == [[sys.executable, "-m", "logitsmatch", "run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                    "--platform", "cpu", "--schedule", "chunked", "--no-compare"]]
    assert "schedule chunked: not supported by this toolchain's megatron-core" in captured.out + captured.err
    report = json.loads((tmp_path / "out" / "invariance.json").read_text())
    assert list(report["not_supported"]) == ["chunked"] and report["table"]["names"] == ["together", "alone"]
    assert "No output for: chunked (not supported" in (tmp_path / "out" / "invariance.md").read_text()


def test_forward_runs_after_together_whatever_the_order_given(results, project, monkeypatch, capsys):
    from logitsmatch.run import freshness

    suite, golden, tmp_path = results
    ran = []

    def run(command, env):
        schedule = command[command.index("--schedule") + 1] if "--schedule" in command else "together"
        ran.append(schedule)
        publish_schedule(project, tmp_path / "results", suite, schedule, golden)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(freshness.subprocess, "run", run)
    code = invariance_cli("--schedules", "forward,together", "--out", str(tmp_path / "out"))
    assert code == 0, capsys.readouterr()
    assert ran == ["together", "forward"]
    assert json.loads((tmp_path / "out" / "invariance.json").read_text())["table"]["names"] == ["forward", "together"]


def test_a_candidate_runs_and_is_labelled_as_itself(results, project, monkeypatch, capsys):
    """nox -s invariance -- --megatron-core SPEC runs `logitsmatch invariance --candidate NAME` in the candidate's
    venv."""
    from logitsmatch.run import freshness

    suite, golden, tmp_path = results
    ran = []

    def run(command, env):
        ran.append(command)
        schedule = command[command.index("--schedule") + 1] if "--schedule" in command else "together"
        path = publish_schedule(project, tmp_path / "results", suite, schedule, golden)
        sidecar = path.with_name("result.provenance.json")
        record = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**record, "toolchain": "cand-x", "candidate_of": DEFAULT_TOOLCHAIN}))
        target = path.parent.parent / "cand-x"
        path.parent.rename(target)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(freshness.subprocess, "run", run)
    arguments = ["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--schedules", "together,alone",
                 "--candidate", "cand-x", "--out", str(tmp_path / "out")]
    assert cli_main(arguments) == 0, capsys.readouterr()
    assert [command[command.index("--candidate") + 1] for command in ran] == ["cand-x", "cand-x"]
    assert cli_main(arguments) == 0 and len(ran) == 2  # the candidate's fresh results are reused
    report = json.loads((tmp_path / "out" / "invariance.json").read_text())
    assert "--candidate cand-x" in report["command"] and "cand-x" in report["table"]["files"]["alone"]


class Release:
    """What the harness asks of the installed release about batch invariance (rank.adapters' answers)."""

    def __init__(self, has_mode: bool):
        self.has_mode = has_mode

    def has_batch_invariant_mode(self) -> bool:
        return self.has_mode


def test_batch_invariant_mode_is_applied_on_gpus_only_and_refused_where_the_release_lacks_it():
    from logitsmatch.errors import Unsupported
    from logitsmatch.flows.run_suite import batch_invariant_decision

    cpu = get_platform("cpu")
    assert batch_invariant_decision(False, Release(True), cpu, (0, 16, 1)) == {"requested": False, "applied": False}
    decision = batch_invariant_decision(True, Release(True), cpu, (0, 16, 1))
    assert not decision["applied"] and decision["why"].startswith("not applied on platform cpu (megatron-core 0.16.1")
    assert "Triton GPU kernels" in decision["why"] and "flash" in decision["why"]
    gpu = get_platform("h100", installed=frozenset({"flash_attn"}), gpu_count=8, probe=False)
    assert batch_invariant_decision(True, Release(True), gpu, (0, 19, 2)) == {"requested": True, "applied": True}
    with pytest.raises(Unsupported, match="megatron-core 0.15.3 has no batch_invariant_mode"):
        batch_invariant_decision(True, Release(False), cpu, (0, 15, 3))
