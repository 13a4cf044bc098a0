"""`logitsmatch collect`: result trees from two simulated machines merged by hardware class; conflicts refused."""

from __future__ import annotations

import json
import shutil

from support import DEFAULT_TOOLCHAIN, TINY_SUITE, assert_one_line, golden_file, run_logitsmatch

from logitsmatch import hardware

INTEL = {"arch": "x86_64", "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+", "flags": ["avx512f"],
         "count": 16, "isa": "AVX512", "blas": {"name": "mkl", "version": "2024.2"}, "threads": 1}


def machine(root, name: str, cpu: dict | None = None, nudge: float = 0.0, suite: str = TINY_SUITE):
    """A results/ tree as a machine leaves it: the committed golden as its result, optionally on another CPU
    (a faked identity in a copy of the provenance) and with one logprob moved."""
    folder = root / name / "results" / suite / "cpu" / DEFAULT_TOOLCHAIN
    folder.mkdir(parents=True)
    document = json.loads(golden_file(suite).read_text())
    if nudge:
        first = next(iter(document))
        document[first]["logprobs"][3] += nudge
    (folder / "result.json").write_text(json.dumps(document))
    provenance = json.loads(golden_file(suite).with_name(golden_file(suite).stem + ".provenance.json").read_text())
    if cpu is not None:
        identity = {"cpu": cpu}
        provenance["hardware"] = {**identity, "class": hardware.hardware_class(identity)}
    (folder / "result.provenance.json").write_text(json.dumps(provenance))
    return root / name


def test_two_machines_merge_into_one_tree_keyed_by_hardware_class(tmp_path):
    amd, intel = machine(tmp_path, "amd"), machine(tmp_path, "intel", INTEL, nudge=9.5e-7)
    into = tmp_path / "merged"
    completed = run_logitsmatch("collect", str(amd), str(intel), "--into", str(into))
    assert completed.returncode == 0, completed.stderr
    toolchain_folder = into / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN
    assert sorted(p.name for p in toolchain_folder.iterdir()) == ["x86_64-amd-avx2-mkl", "x86_64-intel-avx512-mkl"]
    manifest = json.loads((into / "collected.json").read_text())
    assert len(manifest) == 2 and {entry["hardware_class"] for entry in manifest.values()} == {
        "x86_64-amd-avx2-mkl", "x86_64-intel-avx512-mkl"}
    assert "collected 2 result(s)" in completed.stdout
    again = run_logitsmatch("collect", str(amd), "--into", str(into))  # the same bytes again: nothing conflicts
    assert again.returncode == 0, again.stderr


def test_two_different_results_for_one_key_are_refused_naming_both(tmp_path):
    first, second = machine(tmp_path, "job1"), machine(tmp_path, "job2", nudge=1e-6)
    into = tmp_path / "merged"
    completed = run_logitsmatch("collect", str(first), str(second), "--into", str(into))
    assert_one_line(completed, 2, "two different results for")
    assert "job1" in completed.stderr and "job2" in completed.stderr
    assert not into.exists()


def test_a_result_conflicting_with_an_earlier_collection_is_refused(tmp_path):
    into = tmp_path / "merged"
    assert run_logitsmatch("collect", str(machine(tmp_path, "a")), "--into", str(into)).returncode == 0
    before = (into / "collected.json").read_bytes()
    completed = run_logitsmatch("collect", str(machine(tmp_path, "b", nudge=1e-6)), "--into", str(into))
    assert_one_line(completed, 2, "collected earlier")
    assert (into / "collected.json").read_bytes() == before


def test_a_result_of_another_suite_config_is_refused(tmp_path):
    stale = machine(tmp_path, "old")
    sidecar = next(stale.rglob("result.provenance.json"))
    record = json.loads(sidecar.read_text())
    record["suite_config_sha256"] = "0" * 64
    sidecar.write_text(json.dumps(record))
    assert_one_line(run_logitsmatch("collect", str(stale), "--into", str(tmp_path / "m")), 2, "older config")


def test_a_provenance_naming_a_path_is_refused(tmp_path):
    hostile = machine(tmp_path, "hostile")
    sidecar = next(hostile.rglob("result.provenance.json"))
    record = json.loads(sidecar.read_text())
    record["toolchain"] = "../../escape"
    sidecar.write_text(json.dumps(record))
    completed = run_logitsmatch("collect", str(hostile), "--into", str(tmp_path / "m"))
    assert_one_line(completed, 2, "is not a plain name")
    assert not (tmp_path / "escape").exists()


def test_nothing_to_collect_is_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line(run_logitsmatch("collect", str(tmp_path / "empty"), "--into", str(tmp_path / "m")), 2, "no results")
    shutil.rmtree(tmp_path / "empty")
