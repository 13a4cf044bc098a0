"""Pre-release candidates: overrides, naming, the Python a candidate needs, and the session that runs one."""

from __future__ import annotations

import zipfile

import pytest

from logitsmatch.devtools.prerelease import Override, candidate_python, derive
from logitsmatch.errors import BadInput
from logitsmatch.toolchains import get_toolchain
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, FakeSession


def test_derive_swaps_only_the_overridden_pins(project, tmp_path):
    baseline = get_toolchain(project / "pyproject.toml", DEFAULT_TOOLCHAIN)
    wheel = tmp_path / "megatron_core-0.17.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    candidate = derive(baseline, [Override("megatron-core", str(wheel))], "3.12")
    assert f"torch=={baseline.torch}" in candidate.requirements
    assert not any(r.startswith("megatron-core==") for r in candidate.requirements)
    assert str(wheel) in candidate.requirements
    assert candidate.name.startswith("candidate-megatron-core0.17.1-wheel-") and candidate.name.endswith("-py3.12")


def test_candidate_python(project):
    baseline = get_toolchain(project / "pyproject.toml", DEFAULT_TOOLCHAIN)
    assert candidate_python(baseline, [">=3.10"]) == baseline.python
    assert candidate_python(baseline, [">=3.12", ">=3.10"]) == "3.12"
    with pytest.raises(BadInput, match="no supported Python"):
        candidate_python(baseline, [">=4"])


def test_the_prerelease_session_runs_the_suites_in_the_candidates_venv_labelled_against_the_baseline(
        project, tmp_path, monkeypatch):
    from logitsmatch.devtools import nox_support

    wheel = tmp_path / "megatron_core-0.17.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("megatron_core-0.17.1.dist-info/METADATA", "Name: megatron-core\nRequires-Python: >=3.10\n")
    built = {}

    def venv_bin(session, name, python, requirements):
        built[name] = (python, requirements)
        return tmp_path / name / "bin"

    monkeypatch.setattr(nox_support, "venv_bin", venv_bin)
    session = FakeSession(["--megatron-core", str(wheel), TINY_SUITE])
    nox_support.run_prerelease(session)
    ((name, (python, requirements)),) = built.items()
    baseline = get_toolchain(project / "pyproject.toml", DEFAULT_TOOLCHAIN)
    assert python == baseline.python and str(wheel) in requirements and f"torch=={baseline.torch}" in requirements
    assert session.runs == [(str(tmp_path / name / "bin" / "logitsmatch"), "run", TINY_SUITE,
                             "--toolchain", baseline.name, "--candidate", name)]
