"""Pre-release candidates: overrides, naming, and the Python a candidate needs."""

from __future__ import annotations

import pytest

from logitsmatch.devtools.prerelease import Override, candidate_python, derive, parse_overrides
from logitsmatch.errors import BadInput
from logitsmatch.toolchains import get_toolchain
from support import DEFAULT_TOOLCHAIN


def test_parse_overrides():
    overrides, settings = parse_overrides(["--megatron-core", "0.17.0rc1", "--baseline", "x", "--torch", "2.14.1"])
    assert [(o.package, o.spec) for o in overrides] == [("megatron-core", "0.17.0rc1"), ("torch", "2.14.1")]
    assert settings == {"baseline": "x"}
    with pytest.raises(BadInput, match="nothing to validate"):
        parse_overrides(["--baseline", "x"])
    with pytest.raises(BadInput, match="needs a value"):
        parse_overrides(["--megatron-core"])
    with pytest.raises(BadInput, match="unknown option --frob"):
        parse_overrides(["--frob", "1"])


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
