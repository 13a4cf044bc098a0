"""Provenance: what produced a result, kept in a sidecar Megatron's comparator never reads.

A golden without provenance is what makes Megatron's mass rebaselines
unexplainable; every result and golden here carries the interpreter, the key
package versions, the hardware, the date, the command, and the hashes of the
suite config and the weights.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform as _platform
import shlex
import sys
from pathlib import Path

KEY_PACKAGES = (
    "torch",
    "megatron-core",
    "numpy",
    "pyzmq",
    "msgpack",
    "tiktoken",
    "einops",
    "triton",
    "transformer-engine",
    "flash-attn",
    "flashinfer-python",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def hardware() -> dict:
    """CPU model and core count, plus GPU names when torch sees CUDA devices."""
    import os

    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "machine": _platform.machine()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def invocation() -> str:
    """The command as a user would type it (no interpreter or install paths)."""
    return shlex.join(["logitsmatch", *sys.argv[1:]])


def collect(**fields) -> dict:
    """The provenance record for a run; ``fields`` adds the run-specific parts."""
    return {
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "hardware": hardware(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": invocation(),
        **fields,
    }


def result_is_fresh(result: Path, suite) -> bool:
    """A result counts as fresh if its sidecar says it ran the suite's current config."""
    import json

    from logitsmatch.paths import provenance_path

    sidecar = provenance_path(result)
    if not result.is_file() or not sidecar.is_file():
        return False
    try:
        return json.loads(sidecar.read_text()).get("suite_config_sha256") == suite.config_digest()
    except ValueError:
        return False
