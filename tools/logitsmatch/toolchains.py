"""Toolchains as data: ``[tool.logitsmatch.toolchains.<name>]`` in pyproject.toml."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
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
    """``[tool.logitsmatch]`` of ``pyproject``, read once per version of the file (callers only read it)."""
    try:
        stamp = pyproject.stat().st_mtime_ns
    except OSError as exc:
        raise BadInput(f"{pyproject}: cannot read toolchains ({exc})") from None
    return _parsed_table(pyproject, stamp)


@functools.cache
def _parsed_table(pyproject: Path, stamp: int) -> dict:
    """The parse behind ``_table``, keyed on the path and its modification time (an edited file is read again)."""
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


def check_toolchain(name: str, known: Iterable[str]) -> str:
    """``name`` if it is one of the ``known`` toolchain names, else BadInput naming them: the one check of a
    toolchain name, for the CLI, the nox sessions and the fan-out alike."""
    known = list(known)
    if name not in known:
        raise BadInput(f"unknown toolchain {name!r} (known: {', '.join(known)})")
    return name


def add_toolchain_option(parser, help: str, **settings) -> None:
    """Declare ``--toolchain NAME`` (its spelling and metavar, one place); ``settings`` say whether it is required,
    repeatable or defaulted. The name is checked by ``check_toolchain`` where it is used, so an unknown one is the
    same one-line error everywhere."""
    parser.add_argument("--toolchain", metavar=settings.pop("metavar", "NAME"), help=help, **settings)


def get_toolchain(pyproject: Path, name: str) -> Toolchain:
    toolchains = load_toolchains(pyproject)
    return toolchains[check_toolchain(name, toolchains)]


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
