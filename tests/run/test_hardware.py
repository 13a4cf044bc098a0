"""Hardware identity and class: what a result's bits depend on beyond the toolchain."""

from __future__ import annotations

import pytest

from logitsmatch import hardware

AMD = {"cpu": {"arch": "x86_64", "vendor": "AuthenticAMD", "model": "AMD EPYC", "isa": "AVX2",
               "blas": {"name": "mkl", "version": "2024.2"}, "threads": 1}}
INTEL = {"cpu": {"arch": "x86_64", "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+",
                 "isa": "AVX512", "blas": {"name": "mkl", "version": "2024.2"}, "threads": 1}}
H100 = {"cpu": INTEL["cpu"], "cuda": {"devices": [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0"}], "count": 1,
                                      "driver": "570.86", "cuda": "13.0", "cudnn": 91000, "cublas": None}}


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (AMD, "x86_64-amd-avx2-mkl"),
        (INTEL, "x86_64-intel-avx512-mkl"),
        (H100, "cuda-sm90-h100"),
        (
            {"cpu": {"arch": "aarch64", "vendor": "ARM", "isa": "SVE256", "blas": {"name": "open"}}},
            "aarch64-arm-sve256-open",
        ),
    ],
)
def test_class_names_vendor_isa_and_blas_or_the_device(identity, expected):
    assert hardware.hardware_class(identity) == expected


def test_the_vendor_is_part_of_the_class():
    """An Intel machine pinned to AVX2 still differs from an AMD one (../shared/NOTES.md): not one class."""
    pinned = {"cpu": {**INTEL["cpu"], "isa": "AVX2"}}
    assert hardware.hardware_class(pinned) != hardware.hardware_class(AMD)


def test_probe_reads_this_machine():
    torch = pytest.importorskip("torch")
    identity = hardware.probe(threads=1)
    cpu = identity["cpu"]
    assert cpu["isa"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["threads"] == 1 and cpu["blas"]["name"] != "unknown"
    assert identity["class"] == hardware.hardware_class(identity)
    assert identity["class"].startswith(cpu["arch"])


def test_describe_is_one_line_naming_model_isa_and_blas():
    assert hardware.describe(AMD) == "AMD EPYC (AVX2, mkl 2024.2, 1 thread)"
    assert hardware.describe(H100).startswith("NVIDIA H100 80GB HBM3 x1 (sm90, CUDA 13.0")
    unknown = {"cuda": {"devices": [{"name": "NVIDIA H100", "capability": None}], "count": 1}}
    assert hardware.describe(unknown) == "NVIDIA H100 x1 (compute capability unknown)"  # never "CUDA None"


def test_a_provenance_without_identity_is_derived_and_never_guessed():
    legacy = hardware.of_provenance({"hardware": {"cpu": "AMD EPYC", "cpu_count": 2, "machine": "x86_64"}})
    assert legacy["class"] == "x86_64-amd-unknown-unknown"
    assert legacy["derived"]
    assert hardware.of_provenance({}) is None


def test_same_class_is_unknown_when_either_side_is():
    amd = {**AMD, "class": hardware.hardware_class(AMD)}
    intel = {**INTEL, "class": hardware.hardware_class(INTEL)}
    legacy = hardware.of_provenance({"hardware": {"cpu": "AMD EPYC", "machine": "x86_64"}})
    assert hardware.same_class(amd, dict(amd)) is True
    assert hardware.same_class(amd, intel) is False
    assert hardware.same_class(amd, legacy) is None


def test_sides_name_both_classes_when_they_differ():
    amd = {"hardware": {**AMD, "class": hardware.hardware_class(AMD)}}
    intel = {"hardware": {**INTEL, "class": hardware.hardware_class(INTEL)}}
    differ = hardware.sides(amd, intel)
    assert differ["same_class"] is False and differ["golden"] == "x86_64-amd-avx2-mkl"
    assert differ["note"].startswith("golden from AMD EPYC (AVX2, mkl 2024.2, 1 thread) [x86_64-amd-avx2-mkl], "
                                     "this run on Intel(R) Xeon(R) Platinum 8480+ (AVX512")
    assert hardware.sides(amd, amd)["note"] is None and hardware.sides(amd, amd)["same_class"] is True
    assert hardware.sides(None, None) is None
    assert hardware.sides(amd, {"hardware": {"cpu": "AMD EPYC"}})["same_class"] is None


def _with_sidecar(tmp_path, name: str, golden, hardware_record: dict | None):
    import json
    import shutil

    target = tmp_path / f"{name}.json"
    shutil.copy(golden, target)
    sidecar = json.loads(golden.with_name(golden.stem + ".provenance.json").read_text())
    if hardware_record is not None:
        sidecar["hardware"] = hardware_record
    target.with_name(f"{name}.provenance.json").write_text(json.dumps(sidecar))
    return target


def test_compare_names_both_classes_when_a_result_comes_from_other_hardware(tmp_path):
    """A committed golden (AMD EPYC) against a copy whose provenance says Intel Xeon (AVX-512)."""
    import json

    from support import TINY_SUITE, golden_file, run_logitsmatch

    golden = _with_sidecar(tmp_path, "golden", golden_file(TINY_SUITE), None)
    intel = _with_sidecar(
        tmp_path, "current", golden_file(TINY_SUITE), {**INTEL, "class": hardware.hardware_class(INTEL)}
    )
    completed = run_logitsmatch("compare", str(golden), str(intel), "--json", str(tmp_path / "report.json"))
    assert completed.returncode == 0, completed.stderr
    assert (
        "golden from AMD EPYC (AVX2, mkl 2024.2, 1 thread) [x86_64-amd-avx2-mkl], this run on "
        "Intel(R) Xeon(R) Platinum 8480+ (AVX512, mkl 2024.2, 1 thread) [x86_64-intel-avx512-mkl]"
    ) in completed.stdout
    assert "judged at the tolerance (abs 0.001)" in completed.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["hardware"] == {
        "golden": "x86_64-amd-avx2-mkl",
        "current": "x86_64-intel-avx512-mkl",
        "same_class": False,
    }
    strict = run_logitsmatch("compare", str(golden), str(intel), "--mode", "deterministic")
    assert "cannot be told apart from hardware drift" in strict.stdout
    same = run_logitsmatch("compare", str(golden), str(_with_sidecar(tmp_path, "same", golden_file(TINY_SUITE), None)),
                           "--json", str(tmp_path / "same-report.json"))  # same.json is the input itself
    assert same.returncode == 0, same.stderr
    assert "bitwise agreement is not expected" not in same.stdout
    assert json.loads((tmp_path / "same-report.json").read_text())["hardware"]["same_class"] is True
