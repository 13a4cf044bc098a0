"""Hardware identity: what a result's bits depend on beyond the toolchain.

CPU fp32 results are bitwise per *hardware class*: an Intel Xeon (AVX-512) and an AMD EPYC
(AVX2) running the same toolchain on the same weights differ by ~1e-6, and pinning the Intel
machine's ISA to AVX2 still does not reproduce the AMD bits (../shared/NOTES.md). So a
difference between two results of different classes is not toolchain drift, and every result's
provenance says which class produced it.

The class is ``<arch>-<vendor>-<isa>-<blas>`` on CPU (``x86_64-amd-avx2-mkl``) and
``cuda-sm<major><minor>-<device>`` on GPU (``cuda-sm90-h100``); docs/hardware.md says why these
parts and not others. The BLAS *version* and the thread count are recorded but are not part of the
class: the BLAS ships inside the torch wheel (a toolchain difference) and the ranks' threads are
set by the plan.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform as _platform
import re
import shutil
import subprocess
from pathlib import Path

# The instruction-set extensions worth naming: each changes which kernels torch/BLAS may pick.
_NAMED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
_CUBLAS_DISTRIBUTIONS = ("nvidia-cublas-cu12", "nvidia-cublas-cu13", "nvidia-cublas")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _blas(config: str) -> dict:
    """BLAS name and version from ``torch.__config__.show()``."""
    name = re.search(r"BLAS_INFO=(\w+)", config)
    version = re.search(r"Math Kernel Library Version ([\w.]+)", config) or re.search(r"OpenBLAS ([\w.]+)", config)
    return {"name": name.group(1) if name else "unknown", "version": version.group(1) if version else None}


def _cpu(torch, threads: int | None) -> dict:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cpu = {
        "arch": _platform.machine(),
        "vendor": info.get("vendor_id") or _platform.processor() or "unknown",
        "model": info.get("model name") or _platform.processor() or "unknown",
        "flags": [flag for flag in _NAMED_FLAGS if flag in flags],
        "count": os.cpu_count(),
    }
    if torch is not None:
        cpu["isa"] = torch.backends.cpu.get_cpu_capability()
        cpu["blas"] = _blas(torch.__config__.show())
        cpu["threads"] = threads if threads is not None else torch.get_num_threads()
        cpu["isa_pins"] = {name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
                           if name in os.environ}
    return cpu


def _driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    listed = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=30)
    return listed.stdout.splitlines()[0].strip() if listed.returncode == 0 and listed.stdout.strip() else None


def _cuda(torch) -> dict | None:
    if torch is None or not torch.cuda.is_available():
        return None
    devices = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        devices.append({"name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}"})
    cublas = None
    for distribution in _CUBLAS_DISTRIBUTIONS:
        try:
            cublas = importlib.metadata.version(distribution)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"devices": devices, "count": len(devices), "driver": _driver(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "cublas": cublas}


def probe(threads: int | None = None) -> dict:
    """This process's hardware identity (torch's view where torch is imported, /proc otherwise)."""
    import sys

    torch = sys.modules.get("torch")
    identity = {"cpu": _cpu(torch, threads)}
    cuda = _cuda(torch)
    if cuda:
        identity["cuda"] = cuda
    identity["class"] = hardware_class(identity)
    return identity


def _short_device(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100``: the product, not the memory variant."""
    words = [word for word in name.lower().replace("nvidia", "").split() if word not in ("geforce", "tesla")]
    return re.sub(r"[^a-z0-9]", "", words[0]) if words else "gpu"


def hardware_class(identity: dict) -> str:
    """The documented class of an identity (see the module docstring); ``unknown`` parts say so."""
    cuda = identity.get("cuda")
    if cuda and cuda.get("devices"):
        first = cuda["devices"][0]
        capability = first.get("capability")
        return f"cuda-{'sm' + capability.replace('.', '') if capability else 'unknown'}-{_short_device(first['name'])}"
    cpu = identity.get("cpu") or {}
    vendor = _VENDORS.get(cpu.get("vendor", ""), re.sub(r"[^a-z0-9]", "", str(cpu.get("vendor", "unknown")).lower()))
    isa = str(cpu.get("isa") or "unknown").lower()
    blas = str((cpu.get("blas") or {}).get("name") or "unknown").lower()
    return f"{cpu.get('arch') or 'unknown'}-{vendor or 'unknown'}-{isa}-{blas}"


def describe(identity: dict) -> str:
    """One human line: ``AMD EPYC (AVX2, mkl 2024.2, 1 thread)`` or ``NVIDIA H100 80GB HBM3 x1 (sm90, CUDA 13.0)``."""
    cuda = identity.get("cuda")
    if cuda and cuda.get("devices"):
        first = cuda["devices"][0]
        capability = first.get("capability")
        parts = [f"sm{capability.replace('.', '')}" if capability else "compute capability unknown"]
        parts += [f"{what} {cuda[key]}" for key, what in (("cuda", "CUDA"), ("driver", "driver")) if cuda.get(key)]
        return f"{first['name']} x{cuda['count']} ({', '.join(parts)})"
    cpu = identity.get("cpu") or {}
    blas = cpu.get("blas") or {}
    parts = [cpu.get("isa") or "ISA unknown", " ".join(str(p) for p in (blas.get("name"), blas.get("version")) if p)]
    if cpu.get("threads") is not None:
        parts.append(f"{cpu['threads']} thread{'s' if cpu['threads'] != 1 else ''}")
    return f"{cpu.get('model') or 'unknown CPU'} ({', '.join(p for p in parts if p)})"


def of_provenance(record: dict) -> dict | None:
    """The hardware identity a provenance record holds, with its class; None when it holds none.

    Records written before identities existed hold only ``{"cpu": model, "cpu_count", "machine"}``;
    such a record's identity is ``derived``: its class is left ``unknown`` where it lacks a part, never guessed.
    """
    hardware = record.get("hardware")
    if not isinstance(hardware, dict):
        return None
    if "class" in hardware and isinstance(hardware.get("cpu"), dict):
        return hardware
    legacy_cpu = hardware.get("cpu") if isinstance(hardware.get("cpu"), str) else None
    identity = {"cpu": {"arch": hardware.get("machine"), "model": legacy_cpu, "count": hardware.get("cpu_count"),
                        "vendor": _vendor_from_model(legacy_cpu or "")}, "derived": "a provenance without an identity"}
    if hardware.get("gpus"):
        identity["cuda"] = {"devices": [{"name": name, "capability": None} for name in hardware["gpus"]],
                            "count": len(hardware["gpus"])}
    identity["class"] = hardware_class(identity)
    return identity


def _vendor_from_model(model: str) -> str:
    lowered = model.lower()
    if "amd" in lowered:
        return "AuthenticAMD"
    if "intel" in lowered:
        return "GenuineIntel"
    return "unknown"


def same_class(first: dict | None, second: dict | None) -> bool | None:
    """Whether two identities are of one class; None when either is unknown (nothing to say)."""
    if (
        not first
        or not second
        or "unknown" in first.get("class", "unknown")
        or "unknown" in second.get("class", "unknown")
    ):
        return None
    return first["class"] == second["class"]


def golden_of_class(first_golden: Path, hardware_class: str | None) -> Path:
    """The golden that stands for ``hardware_class`` among a triple's goldens.

    ``first_golden`` (``golden_values_<platform>_<toolchain>.json``) stands for the class its sidecar names;
    another class has its own file beside it (``…@<class>.json``) once recorded. Where neither fits, the first
    golden is the one to judge against (the report then says the classes differ).
    """
    from logitsmatch.paths import class_golden_path

    if hardware_class is None or class_of_golden(first_golden) in (hardware_class, None):
        return first_golden
    own = class_golden_path(first_golden, hardware_class)
    return own if own.is_file() or not first_golden.is_file() else first_golden


def class_of_golden(golden: Path) -> str | None:
    """The hardware class a golden's sidecar names (None: no sidecar, or a class with unknown parts).

    The sidecar is read as every input is (``provenance.read_sidecar``): a FIFO or a field of the wrong
    type is bad input, never a hang or a crash.
    """
    from logitsmatch.paths import provenance_path
    from logitsmatch.provenance import read_sidecar

    sidecar = provenance_path(golden)
    if not sidecar.exists():
        return None
    identity = of_provenance(read_sidecar(sidecar))
    if not identity or "unknown" in identity["class"]:
        return None
    return identity["class"]


def sides(golden_provenance: dict | None, current_provenance: dict | None) -> dict | None:
    """What a report says about the two sides' hardware: ``{"golden", "current", "same_class", "note"}``;
    None when neither side has a provenance. ``note`` is the line a person reads when the classes differ."""
    golden = of_provenance(golden_provenance or {})
    current = of_provenance(current_provenance or {})
    if golden is None and current is None:
        return None
    same = same_class(golden, current)
    note = None
    if same is False:
        note = (f"golden from {describe(golden)} [{golden['class']}], this run on {describe(current)} "
                f"[{current['class']}]: bitwise agreement is not expected across hardware classes")
    return {"golden": golden["class"] if golden else None, "current": current["class"] if current else None,
            "same_class": same, "note": note}
