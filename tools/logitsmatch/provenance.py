"""Provenance: what produced a result, kept in a sidecar Megatron's comparator never reads.

A golden without provenance is what makes Megatron's mass rebaselines
unexplainable; every result and golden here carries the interpreter, the key
package versions, the hardware, the date, the command, and the hashes of the
suite config and the weights.
"""

from __future__ import annotations

import datetime
import importlib.metadata
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


def invocation() -> str:
    """The command as a user would type it: no interpreter or install paths, and no host folders (a path in the
    project relative to it, one outside it as ``.../`` and its last part), since provenance is committed."""
    return shlex.join(["logitsmatch", *(_shown_argument(argument) for argument in sys.argv[1:])])


def _shown_argument(argument: str) -> str:
    option, equals, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
    if not value.startswith("/"):
        return argument
    from logitsmatch.paths import shown_path

    shown = shown_path(Path(value))
    return option + equals + (str(shown) if not shown.is_absolute() else f".../{shown.name}")


def collect(hardware: dict, **fields) -> dict:
    """The provenance record for a run: ``hardware`` is the ranks' identity (logitsmatch.hardware.probe),
    ``fields`` the run-specific parts."""
    return {
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "hardware": hardware,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": invocation(),
        **fields,
    }


def execution() -> dict:
    """Which job ran this run, so that a result collected from many machines names its job: the executor
    (submitit's ``SUBMITIT_EXECUTOR``: slurm or local; or slurm when only Slurm's variables are there), the job id
    (``SLURM_JOB_ID``, or submitit's local one) and the host; all None but the host outside a batch job."""
    import os
    import socket

    executor = os.environ.get("SUBMITIT_EXECUTOR") or ("slurm" if os.environ.get("SLURM_JOB_ID") else None)
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    return {"executor": executor, "job_id": job_id, "host": socket.gethostname()}


def weights_identity(weights: dict) -> dict:
    """What identifies a run's weights: the synthetic spec and value rules, or the checkpoint path."""
    if weights.get("source") == "synthetic":
        return {
            "source": "synthetic",
            "spec": weights.get("spec"),
            "generator_version": weights.get("generator_version"),
        }
    return {"source": weights.get("source"), "path": weights.get("path")}


def _describe_weights(identity: dict) -> str:
    if identity["source"] == "synthetic":
        return (f"synthetic weights (seed {(identity.get('spec') or {}).get('seed')}, generator "
               f"v{identity.get('generator_version')})")
    return f"{identity['source']} {identity.get('path')}"


# The fields a sidecar's reader relies on, with the type each must have when present (others are kept as
# they are: a sidecar records more than the harness reads back).
SIDECAR_TYPES: dict[str, type | tuple[type, ...]] = {
    "suite": str, "platform": str, "toolchain": str, "python": str, "suite_config_sha256": str,
    "candidate_of": (str, type(None)), "packages": dict, "weights": dict, "hardware": dict, "recorded": dict,
    "packages.*": str, "hardware.class": str, "hardware.cpu": (dict, str), "hardware.cuda": dict,
    "hardware.gpus": list, "recorded.golden_sha256": str, "recorded.command": str, "recorded.date": str,
    "weights.sha256": str, "weights.source": str, "weights.spec": dict,
}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", type(None): "null", int: "an integer"}


def _type_problem(record: dict) -> str | None:
    """The first field of ``record`` whose type is not what SIDECAR_TYPES says, as ``field is X, expected Y``."""
    for field, expected in SIDECAR_TYPES.items():
        parent, _, key = field.rpartition(".")
        holder = record.get(parent) if parent else record
        if not isinstance(holder, dict):
            continue  # an absent parent, or one of the wrong type (named by its own entry)
        for name in (holder if key == "*" else [key]):
            if name in holder and not isinstance(holder[name], expected):
                kinds = expected if isinstance(expected, tuple) else (expected,)
                value = holder[name]
                return (f"{parent + '.' if parent else ''}{name} is {type(value).__name__} {str(value)[:40]!r}, "
                        f"expected {' or '.join(_TYPE_NAMES[kind] for kind in kinds)}")
    return None


def read_sidecar(sidecar: Path) -> dict:
    """A provenance sidecar, read as every input is (regular file, size cap) and checked against SIDECAR_TYPES.

    Anything else (not JSON, not an object, a field of the wrong type) is one BadInput line naming the
    file and the field: metadata that cannot be trusted is bad input, never an internal error.
    """
    import json

    from logitsmatch.errors import BadInput
    from logitsmatch.files import read_input

    try:
        record = json.loads(read_input(sidecar, "provenance sidecar"))
    except (ValueError, RecursionError):
        raise BadInput(f"{sidecar}: not JSON (a provenance sidecar)") from None
    if not isinstance(record, dict):
        raise BadInput(f"{sidecar}: not an object (a provenance sidecar)")
    problem = _type_problem(record)
    if problem:
        raise BadInput(f"{sidecar}: {problem}")
    return record


def freshness_problem(result: Path, suite, expected_weights: dict, toolchain=None) -> str | None:
    """Why ``result`` cannot stand for ``suite`` as it is now (and for ``toolchain``), or None.

    Fresh means: its provenance ran the suite's current config on the weights the suite
    uses now (``expected_weights``, see run.plan.expected_weights) — a ``--checkpoint``
    experiment is never fresh for a synthetic golden — and, when ``toolchain`` is given,
    names that toolchain and its python, torch and megatron-core versions.
    """
    from logitsmatch.paths import provenance_path

    sidecar = provenance_path(result)
    if not result.is_file():
        return "there is no result"
    if not sidecar.is_file():
        return f"it has no provenance sidecar ({sidecar.name})"
    from logitsmatch.errors import BadInput

    try:
        record = read_sidecar(sidecar)
    except BadInput as exc:
        return f"its provenance sidecar cannot be used ({exc})"
    if record.get("suite_config_sha256") != suite.config_digest():
        return "it ran an older config of the suite"
    ran = weights_identity(record.get("weights") or {})
    wanted = weights_identity(expected_weights)
    if ran != wanted:
        return f"it ran {_describe_weights(ran)}, not the suite's {_describe_weights(wanted)}"
    if toolchain is None:
        return None
    if record.get("toolchain") != toolchain.name or record.get("candidate_of"):
        label = record.get("toolchain")
        if record.get("candidate_of"):
            label = f"{label} (a candidate of {record['candidate_of']})"
        return f"its provenance names toolchain {label}, not {toolchain.name}"
    packages = record.get("packages") or {}
    for name, pinned in (("torch", toolchain.torch), ("megatron-core", toolchain.megatron_core)):
        if str(packages.get(name, "")).split("+")[0] != pinned:
            return f"it ran {name} {packages.get(name, '(none recorded)')}, the toolchain pins {pinned}"
    python = ".".join(str(record.get("python", "")).split(".")[:2])
    if python != toolchain.python:
        return f"it ran python {record.get('python', '(none recorded)')}, the toolchain pins {toolchain.python}"
    return None
