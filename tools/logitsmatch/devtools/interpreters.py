"""Finding a ``pythonX.Y`` for a toolchain: explicit, pyenv, or PATH.

``locate`` only looks at the file system (it runs nothing), so listing nox
sessions costs nothing; ``find`` also checks that the interpreter starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _version_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))


def _is_pyenv_shim(path: str) -> bool:
    return Path(path).resolve().parent == (_pyenv_root() / "shims").resolve()


def locate(version: str) -> str | None:
    """``pythonX.Y``: ``LOGITSMATCH_PYTHON_X_Y``, else an installed pyenv version, else PATH (shims last).

    A pyenv shim runs only the versions pyenv is told to, so a real interpreter
    under ``$PYENV_ROOT/versions`` is preferred to it.
    """
    explicit = os.environ.get(f"LOGITSMATCH_PYTHON_{version.replace('.', '_')}")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    on_path = shutil.which(f"python{version}")
    if on_path and not _is_pyenv_shim(on_path):
        return on_path
    versions = _pyenv_root() / "versions"
    if versions.is_dir():
        releases = sorted((p.name for p in versions.iterdir() if p.name.startswith(version + ".")),
                          key=_version_key, reverse=True)
        for release in releases:
            candidate = versions / release / "bin" / f"python{version}"
            if candidate.is_file():
                return str(candidate)
    return on_path


def works(interpreter: str) -> bool:
    try:
        return subprocess.run([interpreter, "-c", "pass"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find(version: str) -> str | None:
    """A ``pythonX.Y`` that starts, or None."""
    found = locate(version)
    return found if found and works(found) else None


def missing_message(toolchain_name: str, version: str) -> str:
    return (
        f"toolchain {toolchain_name} needs Python {version}, which was not found: put python{version} on PATH, "
        f"or install it with pyenv (pyenv install {version}), "
        f"or set LOGITSMATCH_PYTHON_{version.replace('.', '_')}=/path/to/python{version}"
    )
