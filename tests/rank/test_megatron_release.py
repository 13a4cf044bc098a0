"""Which megatron-core versions the harness runs: every release an adapter speaks, and main's development trees."""

from __future__ import annotations

import pytest

from logitsmatch.errors import BadInput
from logitsmatch.rank.megatron_release import _version_tuple, check_supported


@pytest.mark.parametrize("version", ["0.15.0", "0.16.1", "0.17.1", "0.18.0", "0.19.2", "0.20.0"])
def test_releases_and_mains_development_tree_are_run(version):
    check_supported(_version_tuple(version))


@pytest.mark.parametrize("version", ["0.14.0", "0.21.0", "1.0.0"])
def test_a_version_no_adapter_speaks_is_one_line(version):
    with pytest.raises(BadInput) as raised:
        check_supported(_version_tuple(version))
    assert str(raised.value).count("\n") == 0
    assert f"megatron-core {version} is not supported" in str(raised.value)
    assert "main's 0.20 development trees" in str(raised.value)


def test_a_development_suffix_is_read_as_its_release():
    assert _version_tuple("0.20.0rc0+d98e8a6") == (0, 20, 0)
