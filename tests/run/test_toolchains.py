"""Toolchains are data in pyproject.toml, and the noxfile's view of them."""

from __future__ import annotations

import re
import subprocess

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.toolchains import default_toolchain_name, get_toolchain, load_toolchains
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, FakeSession


def test_shipped_toolchains(project):
    toolchains = load_toolchains(project / "pyproject.toml")
    default = toolchains[default_toolchain_name(project / "pyproject.toml")]
    assert (default.python, default.torch, default.megatron_core) == ("3.11", "2.13.0", "0.16.1")
    assert "default" in default.tags
    newest = [t for t in toolchains.values() if t.megatron_core.startswith("0.19")]
    assert newest and newest[0].python == "3.12"
    same_torch = [
        t for t in toolchains.values() if t is not default and t.torch == default.torch and t.python == default.python
    ]
    assert same_torch, "a toolchain differing from the default only in megatron-core"
    assert f"megatron-core=={default.megatron_core}" in default.requirements()


def test_unknown_toolchain(project):
    with pytest.raises(BadInput, match="unknown toolchain 'py2'"):
        get_toolchain(project / "pyproject.toml", "py2")


def test_incomplete_toolchain(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.logitsmatch.toolchains.x]\npython = "3.11"\n')
    with pytest.raises(BadInput, match="lacks megatron-core, torch"):
        load_toolchains(tmp_path / "pyproject.toml")


# --- the nox sessions' view of suites, releases and their arguments --------------------------


@pytest.fixture
def built(monkeypatch, tmp_path):
    """The venvs a session asked for, by name, each a bin folder under tmp_path (nothing is built)."""
    from logitsmatch.devtools import nox_support

    venvs = {}

    def venv_bin(session, name, python, requirements):
        venvs[name] = requirements
        return tmp_path / name / "bin"

    monkeypatch.setattr(nox_support, "venv_bin", venv_bin)
    monkeypatch.setattr(nox_support, "install_harness", lambda session, *extras: None)
    return venvs


def test_default_suites_are_the_seed_and_every_fast_sibling(project, built):
    from logitsmatch.devtools import nox_support
    from logitsmatch.family import family_suites
    from logitsmatch.toolchains import default_suite_names

    defaults = default_suite_names(project / "pyproject.toml", nox_support.SUITES)
    assert "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq" in defaults
    tiny = {name for name in nox_support.SUITES if "_tiny_" in name}
    assert len(defaults) == 6 and set(defaults) - {defaults[0]} <= tiny  # the main job's six, whatever else is here

    def suites_run(posargs):
        session = FakeSession(posargs)
        nox_support.run_suites(session, DEFAULT_TOOLCHAIN)
        return [run[2] for run in session.runs]

    assert suites_run([]) == defaults
    assert suites_run(["all"]) == nox_support.SUITES
    assert suites_run(["family"]) == family_suites(project) and set(defaults) <= set(family_suites(project))
    assert suites_run(["gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq", "-q"]) == [
        "gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq"]
    assert list(built) == [DEFAULT_TOOLCHAIN]


def test_the_toolchain_session_runs_its_venvs_logitsmatch_with_the_options_given(tmp_path, built):
    from logitsmatch.devtools import nox_support

    session = FakeSession(["--timeout", "100", TINY_SUITE, "--no-compare", "--capture"])
    nox_support.run_suites(session, DEFAULT_TOOLCHAIN)
    (command,) = session.runs
    assert command == (str(tmp_path / DEFAULT_TOOLCHAIN / "bin" / "logitsmatch"), "run", TINY_SUITE,
                       "--toolchain", DEFAULT_TOOLCHAIN, "-q", "--timeout=100", "--no-compare", "--capture")


@pytest.mark.parametrize("verbosity", [["-v"], ["--verbose"], ["-q"], ["--quiet"]])
def test_a_session_runs_each_suite_quietly_unless_told_a_verbosity(tmp_path, built, verbosity):
    """Each run prints its verdict line only (the session ends with the summary); a chosen verbosity wins."""
    from logitsmatch.devtools import nox_support

    session = FakeSession([TINY_SUITE, *verbosity])
    nox_support.run_suites(session, DEFAULT_TOOLCHAIN)
    (command,) = session.runs
    assert command[5:] == tuple(verbosity)
    assert built[DEFAULT_TOOLCHAIN] == nox_support.TOOLCHAINS[DEFAULT_TOOLCHAIN].requirements()


def test_words_a_session_does_not_own_go_to_its_command_which_validates_them(tmp_path, built):
    """An option the session does not declare is the command's, the next word its value unless it is a suite."""
    from logitsmatch.devtools import nox_support

    session = FakeSession(["--frob", TINY_SUITE, "--capture", "x", "-q", "--layout=tp1"])
    nox_support.run_suites(session, DEFAULT_TOOLCHAIN)
    (command,) = session.runs
    assert command[1:] == ("run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--frob", "--capture=x", "-q",
                           "--layout=tp1")


def test_default_suites_must_exist(tmp_path):
    from logitsmatch.toolchains import default_suite_names

    (tmp_path / "pyproject.toml").write_text('[tool.logitsmatch]\ndefault-suites = ["nope"]\n')
    with pytest.raises(BadInput, match="default-suites names unknown suite 'nope'"):
        default_suite_names(tmp_path / "pyproject.toml", ["a"])
    (tmp_path / "pyproject.toml").write_text('[tool.logitsmatch]\n')
    assert default_suite_names(tmp_path / "pyproject.toml", ["a", "b"]) == ["a", "b"]


def test_suites_the_oldest_release_cannot_run_are_listed_not_recorded():
    from logitsmatch.devtools import nox_support

    oldest = next(name for name, t in nox_support.TOOLCHAINS.items() if t.megatron_core.startswith("0.15"))
    session = FakeSession()
    runnable = nox_support.runnable_suites(session, oldest, nox_support.SUITES)
    refused = sorted(set(nox_support.SUITES) - set(runnable))
    assert refused == sorted(
        name for name in nox_support.SUITES if "_pp8_" in name or "_pp2_" in name or "_ep8_" in name
    )
    assert len(session.logs) == len(refused) and all(
        "cannot run" in line and "needs 0.16+" in line for line in session.logs
    )
    assert (
        nox_support.runnable_suites(FakeSession(), nox_support.DEFAULT_TOOLCHAIN, nox_support.SUITES)
        == nox_support.SUITES
    )


def test_a_suite_the_release_cannot_run_does_not_fail_the_main_job_but_a_failing_one_does(built):
    from logitsmatch.devtools import nox_support

    pp8, dp8 = (
        "gpt_dynamic_inference_tp1_pp8_dp1_tiny_logitsmatch_zmq",
        "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq",
    )
    session = FakeSession([pp8, dp8], outcomes={pp8: 4})
    nox_support.run_suites(session, "py3.11-torch2.13.0-mcore0.15.3")
    assert [run[2] for run in session.runs] == [pp8, dp8]
    assert any("not run" in line and pp8 in line for line in session.logs)
    with pytest.raises(RuntimeError, match=f"drift: {dp8}"):
        nox_support.run_suites(FakeSession([pp8, dp8], outcomes={pp8: 4, dp8: 1}), "py3.11-torch2.13.0-mcore0.15.3")


def test_the_session_summary_names_each_outcome_by_its_exit_code_no_golden_apart_from_drift(built):
    from logitsmatch.devtools import nox_support

    tp8, dp8, pp8 = TINY_SUITE, "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq", \
        "gpt_dynamic_inference_tp1_pp8_dp1_tiny_logitsmatch_zmq"
    session = FakeSession([tp8, dp8, pp8], outcomes={tp8: 5, dp8: 1, pp8: 70})
    with pytest.raises(RuntimeError) as failed:
        nox_support.run_suites(session, DEFAULT_TOOLCHAIN)
    message = str(failed.value)
    assert f"NO GOLDEN: {tp8}" in message and f"drift: {dp8}" in message and f"internal error: {pp8}" in message
    assert f"nox -s record -- {DEFAULT_TOOLCHAIN} {tp8}" in message


def test_matrix_session_selects_toolchains_by_tag_and_tabulates_goldens_without_running(built):
    from logitsmatch.devtools import nox_support

    session = FakeSession(["--tag", "releases", TINY_SUITE, "--source", "goldens"])
    nox_support.run_matrix(session)
    (command,) = session.runs
    releases = [name for name, t in nox_support.TOOLCHAINS.items() if "releases" in t.tags]
    assert len(releases) >= 12
    assert command[:2] == ("logitsmatch", "matrix")
    assert [arg.split("=", 1)[1] for arg in command if arg.startswith("--toolchain=")] == releases
    assert [arg for arg in command if arg.startswith("--suite=")] == [f"--suite={TINY_SUITE}"]
    assert "--source=goldens" in command
    with pytest.raises(RuntimeError, match="no toolchain has the tag 'nope'"):
        nox_support.run_matrix(FakeSession(["--tag", "nope"]))
    main_three = FakeSession(["--tag", "default", "--tag", "oldest", "--tag", "newest", "all", "--source", "goldens"])
    nox_support.run_matrix(main_three)
    (command,) = main_three.runs
    assert len([arg for arg in command if arg.startswith("--toolchain=")]) == 3
    assert len([arg for arg in command if arg.startswith("--suite=")]) == len(nox_support.SUITES)
    with pytest.raises(RuntimeError, match="unknown suite 'nope'"):
        nox_support.run_matrix(FakeSession(["nope"]))
    assert built == {}  # goldens only: no toolchain venv


def test_matrix_and_record_run_what_has_no_fresh_result_in_the_toolchains_venv(tmp_path, monkeypatch, built):
    """No nested nox: run.freshness runs `python -m logitsmatch run` in the toolchain's venv, and only when needed."""
    from logitsmatch.devtools import nox_support
    from logitsmatch.run import freshness

    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(tmp_path / "results"))  # nothing is fresh there
    ran, codes = [], iter([0, 0, 3])  # matrix's run, record's two: one passes, one fails

    def run(command, env):
        ran.append(command)
        return subprocess.CompletedProcess(command, next(codes))

    monkeypatch.setattr(freshness.subprocess, "run", run)
    session = FakeSession(["--tag", "default", TINY_SUITE])
    nox_support.run_matrix(session)
    python = str(tmp_path / DEFAULT_TOOLCHAIN / "bin" / "python")
    assert ran == [[python, "-m", "logitsmatch", "run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                    "--platform", "cpu", "--no-compare"]]
    assert session.runs[0][:2] == ("logitsmatch", "matrix") and list(built) == [DEFAULT_TOOLCHAIN]
    record = FakeSession([DEFAULT_TOOLCHAIN, TINY_SUITE, "--force"])
    nox_support.run_record(record)
    assert record.runs == [("logitsmatch", "record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--force")]
    failing = FakeSession([DEFAULT_TOOLCHAIN, TINY_SUITE])
    with pytest.raises(RuntimeError, match=f"{TINY_SUITE}: logitsmatch run exited 3"):
        nox_support.run_record(failing)
    assert failing.runs == [] and len(ran) == 3  # nothing recorded from a failed run


def test_record_from_a_collected_tree_runs_nothing_and_records_the_suites_it_holds(tmp_path, monkeypatch):
    from logitsmatch.devtools import nox_support
    from logitsmatch.run import freshness

    monkeypatch.setattr(freshness.subprocess, "run", lambda *a, **k: pytest.fail("record --from must run nothing"))
    monkeypatch.setattr(nox_support, "install_harness", lambda session, *extras: None)
    held = tmp_path / "collected" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN / "x86_64-amd-avx2-mkl"
    held.mkdir(parents=True)
    (held / "result.json").write_text("{}")
    record = FakeSession([DEFAULT_TOOLCHAIN, "--from", str(tmp_path / "collected"), "--only-failing"])
    nox_support.run_record(record)
    assert record.runs == [("logitsmatch", "record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                            f"--from={tmp_path / 'collected'}", "--only-failing")]
    empty = FakeSession(["py3.12-torch2.14.1-mcore0.19.2", "--from", str(tmp_path / "collected")])
    with pytest.raises(RuntimeError, match="holds no collected result"):
        nox_support.run_record(empty)


BAD_ARGUMENTS = [  # session, its own words after --, what the error says, how its usage line starts
    ("run_suites", ["nope"], "unknown suite 'nope'", r"\[SUITE \.\.\.\]"),
    ("run_record", [], "the following arguments are required: TOOLCHAIN", "TOOLCHAIN"),
    ("run_record", ["py2"], "unknown toolchain 'py2'", "TOOLCHAIN"),
    ("run_matrix", ["--tag"], "argument --tag: expected one argument", r"\[--tag TAG\]"),
    ("run_matrix", ["--baseline", "py2"], "baseline 'py2' is not among the selected toolchains", r"\[--tag TAG\]"),
    ("run_invariance", [], "the following arguments are required: SUITE", r"\[--toolchain T\]"),
    ("run_invariance", [TINY_SUITE, "--toolchain", "py2"], "unknown toolchain 'py2'", r"\[--toolchain T\]"),
    ("run_prerelease", [], "nothing to validate: give --megatron-core SPEC", r"\[--megatron-core SPEC\]"),
    ("run_prerelease", ["--megatron-core", "0.17.0", "--baseline", "py2"], "unknown toolchain 'py2'",
     r"\[--megatron-core SPEC\]"),
    ("run_explain", ["--candidate", "B"], "the following arguments are required: --baseline", "--baseline TOOLCHAIN"),
    ("run_explain", ["--baseline", DEFAULT_TOOLCHAIN], "give --candidate TOOLCHAIN", "--baseline TOOLCHAIN"),
    ("run_explain", ["--baseline", DEFAULT_TOOLCHAIN, "--candidate", DEFAULT_TOOLCHAIN, "--torch", "2.14.1"],
     "excludes", "--baseline TOOLCHAIN"),
    ("run_explain", ["--baseline", DEFAULT_TOOLCHAIN, "--pin", "numpy"], "--pin takes NAME==VERSION",
     "--baseline TOOLCHAIN"),
    ("run_explain", ["--baseline", "py2", "--candidate", DEFAULT_TOOLCHAIN], "unknown toolchain 'py2'",
     "--baseline TOOLCHAIN"),
]


@pytest.mark.parametrize(("session", "words", "message", "usage"), BAD_ARGUMENTS,
                         ids=[f"{s}:{' '.join(w) or '(none)'}" for s, w, _, _ in BAD_ARGUMENTS])
def test_session_arguments_that_do_not_parse_fail_the_session_with_its_usage(session, words, message, usage, built):
    """One line: what is wrong, then the session's usage; before any venv is built or anything runs."""
    from logitsmatch.devtools import nox_support

    fake = FakeSession(words)
    toolchain = (DEFAULT_TOOLCHAIN,) if session == "run_suites" else ()  # the parametrized toolchain session
    with pytest.raises(RuntimeError) as failed:
        getattr(nox_support, session)(fake, *toolchain)
    assert message in str(failed.value)
    assert re.search(r"; usage: nox -s fake -- (.* )?" + usage, str(failed.value)), str(failed.value)
    assert "\n" not in str(failed.value) and fake.runs == [] and built == {}


def test_the_explain_session_runs_explain_on_the_toolchain_venvs_and_a_derived_candidates(tmp_path, built):
    from logitsmatch.devtools import nox_support

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    session = FakeSession(["--baseline", DEFAULT_TOOLCHAIN, "--megatron-core", f"{repo}@main", "--pin", "numpy==2.4.6",
                           TINY_SUITE, "--json", "x", "--source", "megatron-core=/src"])
    nox_support.run_explain(session)
    (command,) = session.runs
    base = str(tmp_path / DEFAULT_TOOLCHAIN / "bin" / "python")
    candidate = next(name for name in built if name != DEFAULT_TOOLCHAIN)
    assert command == (base, "-m", "logitsmatch", "explain", TINY_SUITE, "--baseline-python", base,
                       "--toolchain", DEFAULT_TOOLCHAIN, "--json=x", "--source=megatron-core=/src",
                       "--candidate-python", str(tmp_path / candidate / "bin" / "python"),
                       "--candidate-commit", f"megatron-core={repo}@main")
    assert candidate.endswith("-numpy2.4.6") and "numpy==2.4.6" in built[candidate]
    other = "py3.11-torch2.13.0-mcore0.15.3"
    versus = FakeSession(["--baseline", DEFAULT_TOOLCHAIN, "--candidate", other])
    nox_support.run_explain(versus)
    (command,) = versus.runs
    assert command[-2:] == ("--candidate-python", str(tmp_path / other / "bin" / "python"))
    assert built[other] == nox_support.TOOLCHAINS[other].requirements()


def test_a_bare_nox_selects_only_the_default_toolchains_session_and_lists_one_line_each():
    import json
    import sys

    from support import PROJECT

    pytest.importorskip("nox")
    listed = subprocess.run([sys.executable, "-m", "nox", "--list", "--json"], cwd=PROJECT, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [entry["session"] for entry in json.loads(listed.stdout)] == [f"logitsmatch({DEFAULT_TOOLCHAIN})"]
    plain = subprocess.run([sys.executable, "-m", "nox", "-l"], cwd=PROJECT, capture_output=True, text=True,
                           timeout=120)
    sessions = [line for line in plain.stdout.splitlines() if line.startswith(("* ", "- "))]
    assert len(sessions) > len(load_toolchains(PROJECT / "pyproject.toml"))
    for line in sessions:
        description = line.split(" -> ", 1)[1]
        assert description.endswith(".") and not description.endswith(":."), line
