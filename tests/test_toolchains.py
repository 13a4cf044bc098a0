"""Toolchains are data in pyproject.toml, and the noxfile's view of them."""

from __future__ import annotations

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.toolchains import default_toolchain_name, get_toolchain, load_toolchains


def test_shipped_toolchains(project):
    toolchains = load_toolchains(project / "pyproject.toml")
    default = toolchains[default_toolchain_name(project / "pyproject.toml")]
    assert (default.python, default.torch, default.megatron_core) == ("3.11", "2.13.0", "0.16.1")
    assert "default" in default.tags
    newest = [t for t in toolchains.values() if t.megatron_core.startswith("0.19")]
    assert newest and newest[0].python == "3.12"
    same_torch = [t for t in toolchains.values() if t is not default and t.torch == default.torch and t.python == default.python]
    assert same_torch, "a toolchain differing from the default only in megatron-core"
    assert f"megatron-core=={default.megatron_core}" in default.requirements()


def test_unknown_toolchain(project):
    with pytest.raises(BadInput, match="unknown toolchain 'py2'"):
        get_toolchain(project / "pyproject.toml", "py2")


def test_incomplete_toolchain(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.logitsmatch.toolchains.x]\npython = "3.11"\n')
    with pytest.raises(BadInput, match="lacks megatron-core, torch"):
        load_toolchains(tmp_path / "pyproject.toml")


# --- the nox sessions' view of suites and releases -------------------------------------------


class FakeSession:
    """What nox_support uses of a nox session, recording instead of running."""

    name = "fake"

    def __init__(self, posargs=(), outcomes=None):
        self.posargs, self.outcomes, self.logs, self.runs = list(posargs), outcomes or {}, [], []

    def log(self, message):
        self.logs.append(message)

    def error(self, message):
        raise RuntimeError(message)

    def run(self, *args, **kwargs):
        from nox.command import CommandFailed

        self.runs.append(args)
        code = self.outcomes.get(args[2], 0)
        if code:
            raise CommandFailed(f"Returned code {code}", return_code=code)


def test_default_suites_are_the_seed_and_every_fast_sibling(project):
    from logitsmatch.devtools import nox_support
    from logitsmatch.toolchains import default_suite_names

    defaults = default_suite_names(project / "pyproject.toml", nox_support.SUITES)
    assert "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq" in defaults
    tiny = {name for name in nox_support.SUITES if "_tiny_" in name}
    assert len(tiny) == 5 and tiny <= set(defaults) and len(defaults) == 6
    assert nox_support.selected_suites(FakeSession()) == defaults
    assert nox_support.selected_suites(FakeSession(["all"])) == nox_support.SUITES
    assert nox_support.selected_suites(FakeSession(["gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq", "-q"])) == [
        "gpt_dynamic_inference_tp1_pp8_dp1_583m_logitsmatch_zmq"]


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
    assert refused == sorted(name for name in nox_support.SUITES if "_pp8_" in name or "_pp2_" in name or "_ep8_" in name)
    assert len(session.logs) == len(refused) and all("cannot run" in line and "needs 0.16+" in line for line in session.logs)
    assert nox_support.runnable_suites(FakeSession(), nox_support.DEFAULT_TOOLCHAIN, nox_support.SUITES) == nox_support.SUITES


def test_a_suite_the_release_cannot_run_does_not_fail_the_main_job_but_a_failing_one_does():
    from logitsmatch.devtools import nox_support

    pp8, dp8 = "gpt_dynamic_inference_tp1_pp8_dp1_tiny_logitsmatch_zmq", "gpt_dynamic_inference_tp1_pp1_dp8_tiny_logitsmatch_zmq"
    session = FakeSession([pp8, dp8], outcomes={pp8: 4})
    nox_support.run_suites(session, "py3.11-torch2.13.0-mcore0.15.3")
    assert [run[2] for run in session.runs] == [pp8, dp8]
    assert any("not run" in line and pp8 in line for line in session.logs)
    with pytest.raises(RuntimeError, match=f"failed suites: {dp8}"):
        nox_support.run_suites(FakeSession([pp8, dp8], outcomes={pp8: 4, dp8: 1}), "py3.11-torch2.13.0-mcore0.15.3")


def test_matrix_session_selects_toolchains_by_tag_and_tabulates_goldens_without_running(monkeypatch):
    from logitsmatch.devtools import nox_support

    monkeypatch.setattr(nox_support, "install_harness", lambda session, *extras: None)
    tiny = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
    session = FakeSession(["--tag", "releases", tiny, "--source", "goldens"])
    nox_support.run_matrix(session)
    (command,) = session.runs
    releases = [name for name, t in nox_support.TOOLCHAINS.items() if "releases" in t.tags]
    assert len(releases) >= 12
    assert command[:2] == ("logitsmatch", "matrix")
    assert [arg.split("=", 1)[1] for arg in command if arg.startswith("--toolchain=")] == releases
    assert [arg for arg in command if arg.startswith("--suite=")] == [f"--suite={tiny}"] and "--source=goldens" in command
    with pytest.raises(RuntimeError, match="no toolchain has the tag 'nope'"):
        nox_support.run_matrix(FakeSession(["--tag", "nope"]))
    main_three = FakeSession(["--tag", "default", "--tag", "oldest", "--tag", "newest", "all", "--source", "goldens"])
    nox_support.run_matrix(main_three)
    (command,) = main_three.runs
    assert len([arg for arg in command if arg.startswith("--toolchain=")]) == 3
    assert len([arg for arg in command if arg.startswith("--suite=")]) == len(nox_support.SUITES)
    with pytest.raises(RuntimeError, match="unknown suite 'nope'"):
        nox_support.run_matrix(FakeSession(["nope"]))


def test_session_arguments_that_do_not_parse_fail_the_session_with_its_usage():
    from logitsmatch.devtools import nox_support

    with pytest.raises(RuntimeError, match=r"usage: nox -s fake -- \[--tag TAG"):
        nox_support.run_matrix(FakeSession(["--tag"]))
    with pytest.raises(RuntimeError, match=r"usage: nox -s fake -- SUITE \[--layouts"):
        nox_support.run_invariance(FakeSession([]))
