"""The venvs toolchains and candidates run in: one explicit folder each (``toolchains.toolchain_venv``).

A venv holds the pins and the harness, installed editable (``-e PROJECT[plot]``: it always runs
the checkout's code, so a harness edit needs no reinstall). It is reused as it is while the stamp
of what it was built from (the pins, the local files among them, the harness's own dependencies)
is unchanged; otherwise it is built again from an empty folder, so no package of an older pin set
survives. A local source folder among the pins has no cheap stamp: it is installed again each time.
Standard library only (runs in nox's interpreter).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from logitsmatch.errors import BadInput

STAMP = "logitsmatch-venv.json"
HARNESS_EXTRAS = ("plot",)  # explain and invariance draw their PNGs in the toolchain's venv


def stamp(requirements: list[str], project: Path) -> str:
    """What a venv is built from: each pin (a local file with its size and mtime) and the harness's dependencies."""
    pins = []
    for requirement in requirements:
        path = Path(requirement)
        pins.append([requirement, path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else [requirement])
    declared = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    extras = declared["optional-dependencies"]
    harness = [*declared["dependencies"], *(pin for extra in HARNESS_EXTRAS for pin in extras[extra])]
    return json.dumps({"requirements": pins, "harness": harness}, indent=1) + "\n"


def ensure(interpreter: str, location: Path, requirements: list[str], project: Path,
           log: Callable[[str], None] = print) -> Path:
    """The venv at ``location`` with ``requirements`` and the project's harness; returns its ``bin`` folder."""
    bin_dir, marker = location / "bin", location / STAMP
    wanted = stamp(requirements, project)
    built = (bin_dir / "python").exists() and marker.is_file() and marker.read_text() == wanted
    local_sources = [r for r in requirements if Path(r).is_dir()]
    if built and not local_sources:
        return bin_dir
    if built:
        log(f"venv {location.name}: installing the local sources again ({', '.join(local_sources)})")
        _pip(bin_dir, ["--no-deps", "--force-reinstall", *local_sources], location)
        return bin_dir
    log(f"venv {location.name}: building it ({' '.join(requirements)} + the harness)")
    location.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run([interpreter, "-m", "venv", "--clear", str(location)]).returncode != 0:
        raise BadInput(f"{interpreter} could not create a venv at {location}")
    _pip(bin_dir, [*requirements, "--editable", f"{project}[{','.join(HARNESS_EXTRAS)}]"], location)
    marker.write_text(wanted)  # last: an interrupted build is never taken for a finished one
    return bin_dir


def _pip(bin_dir: Path, arguments: list[str], location: Path) -> None:
    """pip install into the venv; its messages are shown only when it fails (as nox's session.install does)."""
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *arguments],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write((done.stdout or "") + (done.stderr or ""))
        raise BadInput(f"pip could not install into the venv {location} (its messages are above)")
