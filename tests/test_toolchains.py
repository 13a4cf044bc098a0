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
