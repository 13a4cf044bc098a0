"""`logitsmatch record`: shows the diff first, refuses to overwrite without --force, atomic."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from logitsmatch.cli import main as cli_main
from logitsmatch.cli import record as record_cli
from logitsmatch.suites import load_suite
from support import DEFAULT_TOOLCHAIN, TINY_SUITE


@pytest.fixture
def project_copy(project, tmp_path, monkeypatch):
    """A scratch project (pyproject, suites, goldens) with a fresh result of the tiny suite."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(project / "pyproject.toml", root)
    shutil.copytree(project / "suites", root / "suites")
    shutil.copytree(project / "model_configs", root / "model_configs")
    shutil.copytree(project / "golden_values" / TINY_SUITE, root / "golden_values" / TINY_SUITE)
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(root))
    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(root / "results"))
    golden = root / "golden_values" / TINY_SUITE / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}.json"
    result_dir = root / "results" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN
    result_dir.mkdir(parents=True)
    drifted = json.loads(golden.read_text())
    drifted["0"]["logprobs"][3] += 0.5
    (result_dir / "result.json").write_text(json.dumps(drifted))
    digest = load_suite(root, TINY_SUITE).config_digest()
    (result_dir / "result.provenance.json").write_text(json.dumps({"suite_config_sha256": digest}))
    return golden, result_dir


def record(*extra):
    return cli_main(["record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, *extra])


def test_refuses_to_overwrite_without_force_and_shows_the_diff_first(project_copy, capsys):
    golden, _ = project_copy
    before = golden.read_bytes()
    assert record() == 1
    out = capsys.readouterr().out
    assert out.index("FAIL") < out.index("not overwritten")
    assert "--force" in out
    assert golden.read_bytes() == before


def test_force_replaces_golden_and_records_provenance(project_copy):
    golden, result_dir = project_copy
    assert record("--force") == 0
    assert golden.read_bytes() == (result_dir / "result.json").read_bytes()
    provenance = json.loads(golden.with_name(golden.stem + ".provenance.json").read_text())
    assert provenance["recorded"]["replaced_existing"] is True
    assert provenance["recorded"]["golden_sha256"] == hashlib.sha256(golden.read_bytes()).hexdigest()


def test_stale_or_missing_result_leaves_golden_alone(project_copy, capsys):
    golden, result_dir = project_copy
    before = golden.read_bytes()
    (result_dir / "result.provenance.json").write_text(json.dumps({"suite_config_sha256": "old"}))
    assert record("--force") == 2
    assert "no fresh result" in capsys.readouterr().err
    (result_dir / "result.json").unlink()
    assert record("--force") == 2
    assert golden.read_bytes() == before


def test_interrupted_write_leaves_old_golden_and_no_temp_file(project_copy, monkeypatch):
    golden, _ = project_copy
    before = golden.read_bytes()
    real_replace = os.replace

    def interrupted(source, target):
        if str(target) == str(golden):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", interrupted)
    assert record("--force") == 130
    assert golden.read_bytes() == before
    assert not [p for p in golden.parent.iterdir() if p.name.endswith(".tmp")]


def test_fresh_result_requires_current_suite_config(project_copy):
    _, result_dir = project_copy
    suite = load_suite(record_cli.paths.project_root(), TINY_SUITE)
    path, provenance = record_cli.fresh_result(suite, "cpu", DEFAULT_TOOLCHAIN)
    assert path == result_dir / "result.json" and provenance["suite_config_sha256"] == suite.config_digest()
