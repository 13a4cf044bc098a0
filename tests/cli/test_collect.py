"""`logitsmatch collect`: result trees from two simulated machines merged by hardware class; conflicts refused."""

from __future__ import annotations

import json
import shutil

import pytest

from logitsmatch import hardware
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, assert_one_line, golden_file, run_logitsmatch

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


def project_copy(project, root):
    """A scratch project (pyproject, suites, the tiny suite's goldens) that record may write into."""
    root.mkdir()
    shutil.copy(project / "pyproject.toml", root)
    for folder in ("suites", "model_configs"):
        shutil.copytree(project / folder, root / folder)
    shutil.copytree(project / "golden_values" / TINY_SUITE, root / "golden_values" / TINY_SUITE)
    return {"LOGITSMATCH_ROOT": str(root), "LOGITSMATCH_RESULTS": str(root / "results")}


def record_from(into, env, *extra):
    return run_logitsmatch("record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--from", str(into), *extra, env=env)


def test_record_from_a_collection_writes_only_into_the_golden_of_the_results_class(project, tmp_path):
    env = project_copy(project, tmp_path / "project")
    goldens = tmp_path / "project" / "golden_values" / TINY_SUITE
    first = goldens / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}.json"
    before = first.read_bytes()
    into = tmp_path / "merged"
    amd, intel = machine(tmp_path, "amd"), machine(tmp_path, "intel", INTEL, nudge=9.5e-7)
    assert run_logitsmatch("collect", str(amd), str(intel), "--into", str(into), env=env).returncode == 0

    assert_one_line(record_from(into, env), 2, "name one with --hardware-class")
    same = record_from(into, env, "--hardware-class", "x86_64-amd-avx2-mkl", "--only-failing")
    assert same.returncode == 0, same.stderr
    assert "not recorded (--only-failing)" in same.stderr + same.stdout
    lie = record_from(into, env, "--hardware-class", "x86_64-amd-avx2-mkl-but-not")
    assert_one_line(lie, 2, "holds no collected result of hardware class")
    intel_golden = goldens / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}@x86_64-intel-avx512-mkl.json"
    recorded = record_from(into, env, "--hardware-class", "x86_64-intel-avx512-mkl")
    assert recorded.returncode == 0, recorded.stderr
    assert intel_golden.is_file() and first.read_bytes() == before
    sidecar = json.loads(intel_golden.with_name(intel_golden.stem + ".provenance.json").read_text())
    assert sidecar["hardware"]["class"] == "x86_64-intel-avx512-mkl"
    assert hardware.golden_of_class(first, "x86_64-intel-avx512-mkl") == intel_golden
    assert hardware.golden_of_class(first, "x86_64-amd-avx2-mkl") == first


def test_a_result_of_another_class_is_not_recorded_over_the_golden(project, tmp_path):
    env = project_copy(project, tmp_path / "project")
    first = tmp_path / "project" / "golden_values" / TINY_SUITE / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}.json"
    before = first.read_bytes()
    into = tmp_path / "merged"
    assert run_logitsmatch("collect", str(machine(tmp_path, "intel", INTEL, nudge=9.5e-7)), "--into", str(into),
                           env=env).returncode == 0
    refused = record_from(into, env, "--force")
    assert_one_line(refused, 2, "pass --hardware-class x86_64-intel-avx512-mkl")
    assert first.read_bytes() == before


def test_matrix_tabulates_a_collected_tree(tmp_path):
    into = tmp_path / "merged"
    assert run_logitsmatch("collect", str(machine(tmp_path, "amd")), "--into", str(into)).returncode == 0
    out = tmp_path / "matrix"
    completed = run_logitsmatch(
        "matrix", "--source", str(into), "--suite", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--out", str(out)
    )
    assert completed.returncode == 0, completed.stderr
    table = json.loads((out / "matrix.json").read_text())["suites"][TINY_SUITE]
    assert table["toolchains"] == [DEFAULT_TOOLCHAIN]
    assert_one_line(run_logitsmatch("matrix", "--source", str(tmp_path / "nothing")), 2, "unknown source")


def test_matrix_marks_the_pairs_that_ran_on_different_hardware_classes(tmp_path):
    """Two toolchains' results collected from two machines: the cells across the classes carry the mark."""
    other = "py3.12-torch2.14.1-mcore0.19.2"
    amd = machine(tmp_path, "amd")
    intel = tmp_path / "intel" / "results" / TINY_SUITE / "cpu" / other
    intel.mkdir(parents=True)
    source = golden_file(TINY_SUITE, other)
    shutil.copy(source, intel / "result.json")
    provenance = json.loads(source.with_name(source.stem + ".provenance.json").read_text())
    provenance["hardware"] = {"cpu": INTEL, "class": hardware.hardware_class({"cpu": INTEL})}
    (intel / "result.provenance.json").write_text(json.dumps(provenance))
    into, out = tmp_path / "merged", tmp_path / "matrix"
    assert run_logitsmatch("collect", str(amd), str(tmp_path / "intel"), "--into", str(into)).returncode == 0
    completed = run_logitsmatch(
        "matrix",
        "--source",
        str(into),
        "--suite",
        TINY_SUITE,
        "--toolchain",
        DEFAULT_TOOLCHAIN,
        "--toolchain",
        other,
        "--out",
        str(out),
    )
    assert completed.returncode == 0, completed.stderr
    table = json.loads((out / "matrix.json").read_text())["suites"][TINY_SUITE]
    assert table["hardware_classes"] == {DEFAULT_TOOLCHAIN: "x86_64-amd-avx2-mkl", other: "x86_64-intel-avx512-mkl"}
    assert table["cells"][DEFAULT_TOOLCHAIN][other]["same_class"] is False
    assert table["cells"][other][other]["same_class"] is True
    assert "=†" in completed.stdout and "(hardware classes differ)" in (out / "matrix.md").read_text()


def _collect_process(sources, into):
    import os
    import subprocess
    import sys

    from support import PROJECT

    return subprocess.Popen([sys.executable, "-m", "logitsmatch", "collect", *map(str, sources), "--into", str(into)],
                            cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_overlapping_collects_of_one_key_with_different_results_let_exactly_one_win(tmp_path):
    """Started together, five times: the second collect waits for the first's lock, then sees its key."""
    first, second = machine(tmp_path, "one"), machine(tmp_path, "two", nudge=1e-6)
    for trial in range(5):
        into = tmp_path / f"merged{trial}"
        processes = [_collect_process([first], into), _collect_process([second], into)]
        outcomes = sorted((process.wait(timeout=120), process.stderr.read()) for process in processes)
        assert [code for code, _ in outcomes] == [0, 2], outcomes
        assert "two different results for" in outcomes[1][1] and "collected earlier" in outcomes[1][1]
        manifest = json.loads((into / "collected.json").read_text())
        assert len(manifest) == 1


def test_overlapping_collects_of_different_keys_both_land(tmp_path):
    amd, intel = machine(tmp_path, "amd"), machine(tmp_path, "intel", INTEL, nudge=9.5e-7)
    for trial in range(5):
        into = tmp_path / f"merged{trial}"
        processes = [_collect_process([amd], into), _collect_process([intel], into)]
        assert [process.wait(timeout=120) for process in processes] == [0, 0]
        manifest = json.loads((into / "collected.json").read_text())
        assert {entry["hardware_class"] for entry in manifest.values()} == {
            "x86_64-amd-avx2-mkl", "x86_64-intel-avx512-mkl"}
        assert not [path for path in into.rglob(".*.tmp")]


def test_names_that_are_not_plain_names_and_results_that_are_not_results_are_refused(tmp_path):
    for field, value in (("platform", ".hidden"), ("toolchain", "a\nb"), ("toolchain", "esc\x1b[31m")):
        hostile = machine(tmp_path, f"{field}{len(value)}")
        sidecar = next(hostile.rglob("result.provenance.json"))
        record = json.loads(sidecar.read_text())
        record[field] = value
        sidecar.write_text(json.dumps(record))
        assert_one_line(run_logitsmatch("collect", str(hostile), "--into", str(tmp_path / "m")), 2, "not a plain name")
    binary = machine(tmp_path, "binary")
    next(binary.rglob("result.json")).write_bytes(b"\x00\x01\x02")
    assert_one_line(run_logitsmatch("collect", str(binary), "--into", str(tmp_path / "m")), 2, "not a result")
    linked = machine(tmp_path, "linked")
    result = next(linked.rglob("result.json"))
    result.unlink()
    result.symlink_to("/etc/passwd")
    assert_one_line(run_logitsmatch("collect", str(linked), "--into", str(tmp_path / "m")), 2, "symbolic link")


def test_a_manifest_entry_of_the_wrong_shape_is_bad_input(tmp_path):
    into = tmp_path / "merged"
    assert run_logitsmatch("collect", str(machine(tmp_path, "a")), "--into", str(into)).returncode == 0
    manifest = json.loads((into / "collected.json").read_text())
    (into / "collected.json").write_text(json.dumps({key: {"origin": 3} for key in manifest}))
    assert_one_line(run_logitsmatch("collect", str(machine(tmp_path, "b")), "--into", str(into)), 2,
                    "is not an object with the strings 'sha256' and 'origin'")


def test_record_from_a_read_only_collection_writes_only_the_golden_and_its_sidecar(project, tmp_path):
    """A mounted CI artifact is read-only: record --from --force reads it, judges, and writes nothing there."""
    import os
    import subprocess

    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI is set: this test bind-mounts a folder read-only and needs root", pytrace=False)
        pytest.skip("a read-only bind mount needs root")
    env = project_copy(project, tmp_path / "project")
    first = tmp_path / "project" / "golden_values" / TINY_SUITE / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}.json"
    into, mounted = tmp_path / "merged", tmp_path / "artifact"
    assert run_logitsmatch("collect", str(machine(tmp_path, "amd", nudge=2e-6)), "--into", str(into),
                           env=env).returncode == 0
    mounted.mkdir()
    subprocess.run(["mount", "--bind", str(into), str(mounted)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)], check=True)
        before = sorted(str(path.relative_to(into)) for path in into.rglob("*"))
        recorded = record_from(mounted, env, "--force")
        assert recorded.returncode == 0, recorded.stderr
        assert sorted(str(path.relative_to(into)) for path in into.rglob("*")) == before
        assert json.loads(first.read_text())[next(iter(json.loads(first.read_text())))]["logprobs"][3] != 0
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
