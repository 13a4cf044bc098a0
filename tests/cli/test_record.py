"""`logitsmatch record`: shows the diff first, refuses to overwrite without --force, atomic, and records
only a result that ran the suite as it is now, on its own weights, in the toolchain being recorded."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from logitsmatch import golden_pairs
from logitsmatch.cli import main as cli_main
from logitsmatch.flows import record as record_flow
from logitsmatch.run.plan import expected_weights
from logitsmatch.suites import load_suite
from logitsmatch.toolchains import get_toolchain
from support import DEFAULT_TOOLCHAIN, TINY_SUITE


def provenance_of_a_run(root) -> dict:
    """What `logitsmatch run` records for the tiny suite in the default toolchain (the fields freshness reads)."""
    toolchain = get_toolchain(root / "pyproject.toml", DEFAULT_TOOLCHAIN)
    suite = load_suite(root, TINY_SUITE)
    return {
        "suite_config_sha256": suite.config_digest(),
        "toolchain": DEFAULT_TOOLCHAIN,
        "candidate_of": None,
        "python": f"{toolchain.python}.7",
        "packages": {"torch": f"{toolchain.torch}+cpu", "megatron-core": toolchain.megatron_core},
        "weights": {**expected_weights(suite, root), "sha256": "0" * 64},
    }


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
    (result_dir / "result.provenance.json").write_text(json.dumps(provenance_of_a_run(root)))
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


def _edit_provenance(result_dir, edit) -> None:
    sidecar = result_dir / "result.provenance.json"
    record_ = json.loads(sidecar.read_text())
    edit(record_)
    sidecar.write_text(json.dumps(record_))


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda r: r.update(suite_config_sha256="old"), "it ran an older config of the suite"),
        (
            lambda r: r.update(weights={"source": "checkpoint", "path": "/data/ckpt/iter_0000100"}),
            "it ran checkpoint /data/ckpt/iter_0000100, not the suite's synthetic weights (seed 1234",
        ),
        (lambda r: r["weights"]["spec"].update(seed=7), "it ran synthetic weights (seed 7"),
        (lambda r: r["weights"].update(generator_version=1), "generator v1"),
        (
            lambda r: r.update(toolchain="py3.11-torch2.13.0-mcore0.15.3"),
            "names toolchain py3.11-torch2.13.0-mcore0.15.3, not",
        ),
        (lambda r: r.update(candidate_of=DEFAULT_TOOLCHAIN), "(a candidate of"),
        (lambda r: r["packages"].update(torch="2.14.1"), "it ran torch 2.14.1, the toolchain pins 2.13.0"),
        (lambda r: r["packages"].pop("megatron-core"), "it ran megatron-core (none recorded)"),
        (lambda r: r.update(python="3.12.1"), "it ran python 3.12.1, the toolchain pins 3.11"),
    ],
    ids=[
        "suite config",
        "a --checkpoint experiment",
        "other seed",
        "other value rules",
        "other toolchain",
        "a candidate",
        "torch version",
        "no megatron-core",
        "python version",
    ],
)
def test_a_result_that_is_not_the_suites_or_the_toolchains_is_refused(project_copy, capsys, edit, reason):
    golden, result_dir = project_copy
    before = golden.read_bytes()
    _edit_provenance(result_dir, edit)
    assert record("--force") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and "cannot record" in err[0], err
    assert golden.read_bytes() == before


def test_missing_result_or_sidecar_leaves_golden_alone(project_copy, capsys):
    golden, result_dir = project_copy
    before = golden.read_bytes()
    (result_dir / "result.provenance.json").unlink()
    assert record("--force") == 2
    assert "no provenance sidecar" in capsys.readouterr().err
    (result_dir / "result.json").unlink()
    assert record("--force") == 2
    assert "there is no result" in capsys.readouterr().err
    assert golden.read_bytes() == before


@pytest.mark.parametrize("interrupted_at", ["marker", "golden"])
def test_interrupted_write_leaves_one_whole_pair_and_no_temp_file(project_copy, monkeypatch, interrupted_at):
    """Ctrl-C before the commit marker is in place leaves the old pair; after it, the next reader of the golden
    finishes the new pair. Either way the two files are one record and no temp file stays."""
    golden, result_dir = project_copy
    before, new = golden.read_bytes(), (result_dir / "result.json").read_bytes()
    real_replace = os.replace

    def interrupted(source, target):
        if Path(target).name.endswith(".pending" if interrupted_at == "marker" else golden.name):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", interrupted)
    assert record("--force") == 130
    monkeypatch.setattr(os, "replace", real_replace)
    assert golden_pairs.mismatch(golden) is None
    assert golden.read_bytes() == (before if interrupted_at == "marker" else new)
    assert not [p for p in golden.parent.iterdir() if p.name.endswith((".tmp", ".pending"))]


def test_fresh_result_requires_current_suite_config(project_copy):
    _, result_dir = project_copy
    root = record_flow.paths.project_root()
    suite = load_suite(root, TINY_SUITE)
    path, provenance = record_flow.fresh_result(suite, "cpu", get_toolchain(root / "pyproject.toml", DEFAULT_TOOLCHAIN))
    assert path == result_dir / "result.json" and provenance["suite_config_sha256"] == suite.config_digest()


def test_the_recorded_command_names_no_host_folder(monkeypatch):
    """Provenance is committed: a folder outside the project shows as .../<its name>, one inside relative to it."""
    from logitsmatch import provenance
    from support import PROJECT

    monkeypatch.setattr(sys, "argv", ["logitsmatch", "record", TINY_SUITE, "--from=/srv/ci/artifacts/collected",
                                      "--out", str(PROJECT / "docs" / "x"), "--json", "relative/a.json"])
    assert provenance.invocation() == (f"logitsmatch record {TINY_SUITE} --from=.../collected --out docs/x "
                                       "--json relative/a.json")
