"""devtools.venvs: a toolchain's venv is reused while what it was built from is unchanged, and built again
from an empty folder when it changes (the interpreter and pip are recorded, not run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from logitsmatch.devtools import venvs
from logitsmatch.errors import BadInput


class Commands(list):
    """The commands run, in order; one naming a word in ``failing`` fails."""

    failing: list[str]


@pytest.fixture
def calls(monkeypatch):
    """Each command ``venvs`` runs; ``python -m venv --clear`` empties the folder and leaves a bin/python."""
    recorded = Commands()
    recorded.failing = []

    def run(command, **kwargs):
        recorded.append(command)
        if command[1:4] == ["-m", "venv", "--clear"]:
            location = Path(command[4])
            (location / venvs.STAMP).unlink(missing_ok=True)
            (location / "bin").mkdir(parents=True, exist_ok=True)
            (location / "bin" / "python").write_text("")
        return subprocess.CompletedProcess(command, 1 if set(recorded.failing) & set(command) else 0)

    monkeypatch.setattr(venvs.subprocess, "run", run)
    return recorded


def test_a_venv_is_reused_while_its_pins_stand_and_rebuilt_when_they_change(project, tmp_path, calls):
    location = tmp_path / "toolchains" / "t"
    pins = ["torch==2.13.0", "numpy==2.4.6"]
    assert venvs.ensure("python3.11", location, pins, project, log=lambda _: None) == location / "bin"
    assert calls[0] == ["python3.11", "-m", "venv", "--clear", str(location)]
    assert calls[1] == [str(location / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins,
                        "--editable", f"{project}[plot]"]
    assert (location / venvs.STAMP).is_file()

    venvs.ensure("python3.11", location, pins, project, log=lambda _: None)
    assert len(calls) == 2  # nothing run: the stamp stands

    venvs.ensure("python3.11", location, ["torch==2.13.0", "numpy==1.26.4"], project, log=lambda _: None)
    assert calls[2][:4] == ["python3.11", "-m", "venv", "--clear"] and "numpy==1.26.4" in calls[3]


def test_a_local_wheel_that_changed_rebuilds_and_a_local_source_folder_is_installed_again(project, tmp_path, calls):
    location = tmp_path / "candidate"
    wheel, source = tmp_path / "megatron_core-0.17.1-py3-none-any.whl", tmp_path / "src"
    wheel.write_bytes(b"one")
    source.mkdir()
    venvs.ensure("python3.12", location, ["torch==2.14.1", str(wheel)], project, log=lambda _: None)
    venvs.ensure("python3.12", location, ["torch==2.14.1", str(wheel)], project, log=lambda _: None)
    assert len(calls) == 2
    wheel.write_bytes(b"two, rebuilt")
    os.utime(wheel, ns=(1, 1))
    venvs.ensure("python3.12", location, ["torch==2.14.1", str(wheel)], project, log=lambda _: None)
    assert len(calls) == 4 and calls[2][3] == "--clear"

    venvs.ensure("python3.12", location, ["torch==2.14.1", str(source)], project, log=lambda _: None)
    venvs.ensure("python3.12", location, ["torch==2.14.1", str(source)], project, log=lambda _: None)
    assert calls[-1][-4:] == ["--quiet", "--no-deps", "--force-reinstall", str(source)]
    assert calls[-1][0] == str(location / "bin" / "python") and calls[-3][3] == "--clear"  # built once, then again


def test_a_failed_install_is_one_line_and_never_taken_for_a_finished_venv(project, tmp_path, calls):
    location = tmp_path / "t"
    calls.failing.append("torch==0.0.0")
    with pytest.raises(BadInput, match="pip could not install into the venv"):
        venvs.ensure("python3.11", location, ["torch==0.0.0"], project, log=lambda _: None)
    assert not (location / venvs.STAMP).exists()
    calls.failing.clear()
    venvs.ensure("python3.11", location, ["torch==0.0.0"], project, log=lambda _: None)
    assert calls[-2][3] == "--clear" and (location / venvs.STAMP).is_file()


def test_the_stamp_names_the_harness_dependencies(project):
    stamp = venvs.stamp(["torch==2.13.0"], project)
    assert '"torch==2.13.0"' in stamp and '"deepdiff>=8.0"' in stamp and "matplotlib" in stamp
