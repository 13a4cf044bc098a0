"""Pre-release validation: a candidate toolchain derived from a baseline with one override.

``--megatron-core SPEC`` / ``--torch SPEC`` may each be a registry version
(e.g. ``0.17.0rc1``), a local wheel, or a local source directory. The
candidate keeps every other pin of the baseline; when the candidate's
megatron-core needs a newer Python than the baseline's, the candidate runs on
the oldest interpreter that satisfies it, and says so. Runs inside nox's own
interpreter: standard library plus ``packaging`` (a nox dependency).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.specifiers import SpecifierSet

from logitsmatch.errors import BadInput
from logitsmatch.toolchains import Toolchain

PYTHONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Override:
    package: str  # "megatron-core" or "torch"
    spec: str

    @property
    def is_path(self) -> bool:
        return Path(self.spec).exists()

    def requirement(self) -> str:
        return str(Path(self.spec).resolve()) if self.is_path else f"{self.package}=={self.spec}"

    def label(self) -> str:
        """``megatron-core0.17.0rc1``, ``megatron-core0.16.0-wheel-1f47a21a``, ``megatron-core-src-…``."""
        if not self.is_path:
            return f"{self.package}{self.spec}"
        path = Path(self.spec).resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        if path.suffix == ".whl":
            return f"{self.package}{path.name.split('-')[1]}-wheel-{digest}"
        return f"{self.package}-src-{digest}"


def requires_python(override: Override, interpreter: str) -> str | None:
    """The Requires-Python of the override's distribution (None when it states none)."""
    path = Path(override.spec)
    if path.is_dir():
        pyproject = path / "pyproject.toml"
        if not pyproject.is_file():
            return None
        return tomllib.loads(pyproject.read_text()).get("project", {}).get("requires-python")
    if path.is_file():
        wheel = path
    else:
        folder = Path(tempfile.mkdtemp(prefix="logitsmatch-prerelease-"))
        fetched = subprocess.run(
            [interpreter, "-m", "pip", "download", "--quiet", "--no-deps", "--ignore-requires-python",
             "--only-binary=:all:", "-d", str(folder), override.requirement()],
            capture_output=True, text=True,
        )
        wheels = sorted(folder.glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            last = (fetched.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise BadInput(f"cannot fetch {override.requirement()}: {last}")
        wheel = wheels[0]
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(metadata).decode())
    return headers.get("Requires-Python")


def candidate_python(baseline: Toolchain, needed: list[str]) -> str:
    """The oldest Python, not older than the baseline's, that every override accepts."""
    for version in PYTHONS[PYTHONS.index(baseline.python):]:
        if all(f"{version}.0" in SpecifierSet(spec) or f"{version}.99" in SpecifierSet(spec) for spec in needed):
            return version
    raise BadInput(f"no supported Python satisfies {', '.join(needed)}")


@dataclass(frozen=True)
class Candidate:
    name: str
    python: str
    requirements: tuple[str, ...]


def derive(baseline: Toolchain, overrides: list[Override], python: str) -> Candidate:
    """The baseline's pins with the overrides swapped in, named after what changed."""
    replaced = {override.package for override in overrides}
    kept = [pin for pin in baseline.requirements() if pin.split("==")[0] not in replaced]
    name = "candidate-" + "-".join(override.label() for override in overrides) + f"-py{python}"
    return Candidate(name, python, tuple(kept + [override.requirement() for override in overrides]))
