"""Toolchains as data: ``[tool.logitsmatch.toolchains.<name>]`` in pyproject.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.layouts import parse_version, records_routing


@dataclass(frozen=True)
class Toolchain:
    name: str
    python: str
    torch: str
    megatron_core: str
    extras: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    requires_gpu: bool = False
    common: tuple[str, ...] = field(default=(), repr=False)

    def requirements(self) -> list[str]:
        """pip requirement strings for this toolchain's venv (besides the harness itself)."""
        return [f"torch=={self.torch}", f"megatron-core=={self.megatron_core}", *self.common, *self.extras]


def _table(pyproject: Path) -> dict:
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{pyproject}: cannot read toolchains ({exc})") from None
    return data.get("tool", {}).get("logitsmatch", {})


def load_toolchains(pyproject: Path) -> dict[str, Toolchain]:
    table = _table(pyproject)
    common = tuple(table.get("common", ()))
    toolchains = {}
    for name, spec in table.get("toolchains", {}).items():
        missing = {"python", "torch", "megatron-core"} - spec.keys()
        if missing:
            raise BadInput(f"{pyproject}: toolchain {name!r} lacks {', '.join(sorted(missing))}")
        toolchains[name] = Toolchain(
            name=name,
            python=str(spec["python"]),
            torch=str(spec["torch"]),
            megatron_core=str(spec["megatron-core"]),
            extras=tuple(spec.get("extras", ())),
            tags=tuple(spec.get("tags", ())),
            requires_gpu=bool(spec.get("requires-gpu", False)),
            common=common,
        )
    return toolchains


def default_toolchain_name(pyproject: Path) -> str:
    return _table(pyproject)["default-toolchain"]


def get_toolchain(pyproject: Path, name: str) -> Toolchain:
    toolchains = load_toolchains(pyproject)
    if name not in toolchains:
        raise BadInput(f"unknown toolchain {name!r} (known: {', '.join(toolchains)})")
    return toolchains[name]


def toolchain_venv(project: Path, name: str) -> Path:
    """Where the venv of toolchain ``name`` (or of a candidate derived from one) lives: one explicit folder per name,
    shared by every nox session and the tests (devtools.venvs builds it)."""
    return project / ".nox" / "toolchains" / name


def routing_toolchain(pyproject: Path) -> str | None:
    """The newest CPU toolchain whose megatron-core records routing_indices (where the routing test runs), or None."""
    candidates = [t for t in load_toolchains(pyproject).values()
                  if not t.requires_gpu and records_routing(parse_version(t.megatron_core))]
    return max(candidates, key=lambda t: parse_version(t.megatron_core)).name if candidates else None


def default_suite_names(pyproject: Path, known: list[str]) -> list[str]:
    """``default-suites``: what ``nox -s logitsmatch`` runs when no suite is named (all ``known`` if unset)."""
    names = _table(pyproject).get("default-suites")
    if names is None:
        return list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BadInput(f"{pyproject}: default-suites names unknown suite {unknown[0]!r}")
    return list(names)
