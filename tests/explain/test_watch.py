"""logitsmatch watch on a planted history (tests/support/planted_watch.py): 30 commits, four planted events.

Cheap by design (about 7 s of CPU for the whole file, 15 to 60 s of wall time on a shared 2-core host): every
"suite run" is a fresh interpreter importing the commit's tree as the watch installs it, writing a result in
milliseconds; the walk, the store, the bisections, the proofs, the finding's check and the reports are the watch's
own. Real suite runs at commits are explain's tests' (tests/inference/test_explain.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logitsmatch.explain.upstream import ABSENT, HOLDS, load_register
from logitsmatch.explain.watch import checkpoints
from support import PROJECT
from support import planted_watch as planted

EVERY = 8


def found(report: dict) -> list:
    """What a watch found, without where its runs lie: each change's commit, suites and the files alone moving it."""
    return [(c["commit"], c["suites"], {s: p["files"]["alone"] for s, p in c["proof"].items()})
            for c in report["changes"]] + [(u["commit"], u["error"]) for u in report["unrunnable"]]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    shas = planted.history(root / "Megatron-LM")
    first = planted.watch(root / "Megatron-LM", root / "out", EVERY)
    return {"root": root, "repo": root / "Megatron-LM", "shas": shas, "walk": first, "report": planted.report(first)}


def test_the_watch_names_exactly_the_moving_commits_with_their_suites_and_file(history):
    report, shas = history["report"], history["shas"]
    changes = {change["commit"]: change for change in report["changes"]}
    assert list(changes) == [shas[planted.MOE_ONLY], shas[planted.SEVERAL_FILES], shas[planted.EVERY_SUITE]]
    assert changes[shas[planted.MOE_ONLY]]["suites"] == [planted.MOE]
    assert changes[shas[planted.MOE_ONLY]]["pr"] == "4414"
    assert changes[shas[planted.SEVERAL_FILES]]["suites"] == [planted.DENSE]
    assert sorted(changes[shas[planted.EVERY_SUITE]]["suites"]) == sorted(planted.SUITES)
    several = changes[shas[planted.SEVERAL_FILES]]
    assert several["files"] == sorted([planted.MLP, planted.QUIET[0], planted.QUIET[1]])
    files = several["proof"][planted.DENSE]["files"]
    assert files["alone"] == [planted.MLP] and files["proven"] is True
    for change in report["changes"]:
        for suite, proof in change["proof"].items():
            assert proof["parent_reproduces_earlier"] is True, (change["subject"], suite)
            assert proof["parent"] == shas[shas.index(change["commit"]) - 1]
            moved = change["moved"][suite]
            values = 4 if change["commit"] == shas[planted.EVERY_SUITE] else 2  # per request: 2 prompt values or 1
            assert moved["logprobs"] == values and moved["tokens_changed"] is False and moved["max_ulps"] >= 1
            assert "captures" in json.dumps(proof["first_module"]) or proof["first_module"].get("problem")
    assert report["undecided"] == []


def test_the_unbuildable_commit_is_named_unrunnable_and_hides_no_change(history):
    report, shas = history["report"], history["shas"]
    unrunnable = {u["commit"]: u for u in report["unrunnable"]}
    assert list(unrunnable) == [shas[planted.BROKEN]]
    assert "SyntaxError" in unrunnable[shas[planted.BROKEN]]["error"]
    assert shas[planted.BROKEN] not in {c["commit"] for c in report["changes"]}
    # the change right after the repair (commit 19, dense) was found across the unrunnable checkpoint 16
    assert shas[planted.SEVERAL_FILES] in {c["commit"] for c in report["changes"]}


def test_the_findings_check_flips_at_the_planted_fix(history):
    report, shas = history["report"], history["shas"]
    (finding,) = report["findings"]
    assert (finding["at_start"], finding["at_end"]) == (HOLDS, ABSENT)
    (flip,) = finding["changes"]
    assert flip["commit"] == shas[planted.CHUNKED_FIX] and flip["now"] == ABSENT
    assert flip["note"].startswith(f"fixed at commit {shas[planted.CHUNKED_FIX][:10]}")
    start = finding["statuses"][shas[0]]
    assert start["rows"] == [{"request": request, "index": 1, "part": "prompt", "reference": -2.25, "on_path": -0.25}
                             for request in ("0", "1")]


def test_within_the_bound_and_quiet_stretches(history):
    report, walk = history["report"], history["walk"]
    sampled = len(checkpoints(planted.COMMITS + 1, EVERY))
    assert sampled == math.ceil(planted.COMMITS / EVERY) + 1
    for suite in planted.SUITES:
        used, bound = report["runs_used"][suite], report["runs_used"][suite]["bound"]
        assert used["runs"] <= bound["runs"], (suite, used)
        assert bound["checkpoints"] == sampled and bound["per_change"] == math.ceil(math.log2(EVERY))
    assert report["runs_used"][planted.MOE]["bound"]["changes"] == 2
    assert report["runs_used"][planted.DENSE]["bound"]["changes"] == 2
    quiet = [(q["from"], q["to"]) for q in report["quiet"]]
    shas = history["shas"]
    assert quiet[0] == (shas[0], shas[planted.MOE_ONLY - 1])
    assert quiet[-1] == (shas[planted.EVERY_SUITE], shas[-1])
    assert walk.stopped is None and report["new_runs"] == len(report["runs"])


def test_a_second_watch_over_the_same_range_runs_nothing(history):
    again = planted.watch(history["repo"], history["root"] / "out", EVERY)
    report = planted.report(again)
    assert again.store.new_runs == 0 and all(run["reused"] for run in report["runs"])
    assert found(report) == found(history["report"])


def test_an_extended_range_runs_only_the_new_commits(tmp_path):
    repo = tmp_path / "Megatron-LM"
    shas = planted.history(repo, commits=planted.COMMITS)
    shorter = tmp_path / "short"
    subprocess.run(["git", "-C", str(repo), "branch", "-q", "short", shas[24]], check=True)
    from logitsmatch.explain import gitsource
    from logitsmatch.explain.watch import Source, Watch
    from logitsmatch.explain.watch_store import Store

    def walk(end: str, count: list):
        inner = planted.runner(repo, shorter / "cache")

        def counting(jobs, results_root):
            for outcome in inner(jobs, results_root):
                count.append(1)
                yield outcome

        commits = gitsource.commits_between(repo, "core_v0.0.1", end)
        store = Store(shorter, "t", "planted", "planted", counting)
        Watch(Source("megatron-core", str(repo), f"core_v0.0.1..{end}", commits), [planted.MOE], EVERY, store).walk()
        return store

    first, second = [], []
    walk("short", first)
    store = walk("main", second)
    assert len(first) > len(second) == 1
    # commit 24 ends the first range and is a checkpoint of the second: only the new checkpoint 30 runs (the MoE
    # sibling moves at 5 and 23, inside the first range)
    assert {run["commit"] for run in store.runs if not run["reused"]} == {shas[30]}


def test_a_watch_killed_in_the_middle_resumes_where_it_stopped(history, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT / "tools"), str(PROJECT / "tests")])}
    script = PROJECT / "tests" / "support" / "planted_watch.py"
    process = subprocess.Popen([sys.executable, str(script), str(history["repo"]), str(out), str(EVERY), "0.05"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = out / "store" / "planted-toolchain" / "planted"
    deadline = time.monotonic() + 60
    while len(list(store.rglob("*.json"))) - len(list(store.rglob("result.json"))) < 6:
        assert process.poll() is None and time.monotonic() < deadline, "the watch ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = len(list(store.rglob("*.json"))) - len(list(store.rglob("result.json")))
    resumed = planted.watch(history["repo"], out, EVERY)
    report = planted.report(resumed)
    assert found(report) == found(history["report"])
    assert resumed.store.new_runs == history["walk"].store.new_runs - saved


def test_a_spent_budget_stops_cleanly_and_the_next_watch_goes_on(history, tmp_path):
    stopped = planted.watch(history["repo"], tmp_path / "out", EVERY, budget=4)
    assert stopped.store.new_runs == 4 and "budget of 4 runs" in stopped.stopped
    report = planted.report(stopped)
    assert report["stopped"] and report["quiet"] == []
    from logitsmatch.explain.watch_report import markdown

    assert "Stopped early" in markdown(report)
    from logitsmatch.flows.watch import publish

    assert publish(stopped, tmp_path / "reports", ["planted"], "planted-toolchain", "planted", 1.0) == 3
    finished = planted.watch(history["repo"], tmp_path / "out", EVERY)
    assert finished.stopped is None
    assert found(planted.report(finished)) == found(history["report"])


def test_the_reports_are_release_notes_and_a_timeline(history, tmp_path):
    from logitsmatch.flows.watch import publish

    code = publish(history["walk"], tmp_path, ["planted"], "planted-toolchain", "planted", 1.0)
    assert code == 1
    text = (tmp_path / "watch.md").read_text()
    shas = history["shas"]
    assert f"### {shas[planted.MOE_ONLY][:10]} Unsorted top-k at inference (#4414)\n\nPR #4414. Files: " in text
    assert f"{planted.MLP} alone moves it" in text
    assert f"{shas[planted.BROKEN][:10]} 'Refactor activations (#4500)': exit 1: SyntaxError" in text
    assert "## Quiet stretches" in text and "fixed at commit" in text
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "watch.json").read_text())["commits"] == planted.COMMITS


def test_the_reports_name_no_path_of_this_machine(history, tmp_path):
    """watch.json and watch.md are committed evidence: the source is named by its folder (no origin here), the
    toolchain's interpreter relative to the project, no absolute path of the host kept."""
    from logitsmatch.flows.watch import publish

    gitdir = history["walk"].source.gitdir
    python = str(PROJECT / ".nox" / "toolchains" / "planted-toolchain" / "bin" / "python")
    publish(history["walk"], tmp_path, ["watch", "--python", python, f"--source=megatron-core={gitdir}",
                                        f"--out={tmp_path / 'out'}"], "planted-toolchain", "planted", 1.0)
    report = json.loads((tmp_path / "watch.json").read_text())
    assert report["source"] == Path(gitdir).name
    assert report["command"] == ["watch", "--python", ".nox/toolchains/planted-toolchain/bin/python",
                                 f"--source=megatron-core={Path(gitdir).name}", "--out=out"]
    for name in ("watch.json", "watch.md"):
        text = (tmp_path / name).read_text()
        assert str(gitdir) not in text and str(PROJECT) not in text and str(tmp_path) not in text, name


def test_the_register_holds_the_chunked_prefill_finding_with_its_report():
    (finding,) = load_register(PROJECT)
    assert finding.id == "chunked-prefill-prompt-logprobs" and finding.path == ("--schedule", "chunked")
    assert (PROJECT / "docs" / "upstream" / finding.folder / "README.md").is_file()
    assert "core_v0.15.0" in finding.seen_in and "d98e8a64dd" in finding.seen_in


def test_the_cli_plans_without_running_and_refuses_bad_input_in_one_line(history, tmp_path):
    from support import run_logitsmatch

    source = f"megatron-core={history['repo']}"
    planned = run_logitsmatch("watch", "--source", source, "--range", "core_v0.0.1..main", "--every", str(EVERY),
                              "--out", str(tmp_path / "never"), "--plan")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert f"{planted.COMMITS} first-parent commits" in planned.stdout and not (tmp_path / "never").exists()
    assert planned.stdout.count("checkpoint ") == len(checkpoints(planted.COMMITS + 1, EVERY))
    for args in (("--range", "main"), ("--range", "core_v0.0.1..nowhere"), ("--every", "0", "--range", "a..b")):
        refused = run_logitsmatch("watch", "--source", source, "--out", str(tmp_path / "out"),
                                  *(("--range", "core_v0.0.1..main") if "--range" not in args else ()), *args)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, (args, refused.stderr)
    unknown = run_logitsmatch("upstream-check", "no-such-finding")
    assert unknown.returncode == 2 and "unknown finding 'no-such-finding'" in unknown.stderr
