"""Where things live: the project tree, the results tree, the checkpoint cache.

The project root is found from the working directory (the folder holding
``pyproject.toml`` with a ``[tool.logitsmatch]`` table) or ``LOGITSMATCH_ROOT``.
Results and caches are outside git; their roots can be moved with
``LOGITSMATCH_RESULTS`` and ``LOGITSMATCH_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from logitsmatch.errors import BadInput


def project_root() -> Path:
    if "LOGITSMATCH_ROOT" in os.environ:
        return Path(os.environ["LOGITSMATCH_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.logitsmatch]" in pyproject.read_text():
            return candidate
    raise BadInput("not inside a logitsmatch project (no pyproject.toml with [tool.logitsmatch]); set LOGITSMATCH_ROOT")


def results_root() -> Path:
    return Path(os.environ.get("LOGITSMATCH_RESULTS", project_root() / "results"))


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logitsmatch"
    return Path(os.environ.get("LOGITSMATCH_CACHE", default))


def result_dir(suite: str, platform: str, toolchain: str) -> Path:
    """results/<suite>/<platform>/<toolchain>/ — the latest run of that triple."""
    return results_root() / suite / platform / toolchain


def golden_path(suite: str, platform: str, toolchain: str) -> Path:
    """golden_values/<suite>/golden_values_<platform>_<toolchain>.json"""
    return project_root() / "golden_values" / suite / f"golden_values_{platform}_{toolchain}.json"


def provenance_path(golden_or_result: Path) -> Path:
    """The sidecar next to a golden or result file; Megatron's comparator never reads it."""
    return golden_or_result.with_name(golden_or_result.stem + ".provenance.json")
