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


def shown_path(path: Path, project: Path | None = None) -> Path:
    """A path as a committed table shows it: relative to the project when inside it (no host paths)."""
    if not path.is_absolute():
        return path
    try:
        return path.resolve().relative_to(project or project_root())
    except ValueError:
        return path


def check_name(kind: str, name: str) -> str:
    """A suite, toolchain or platform name, which becomes one folder or file name: BadInput unless it is
    one plain component (no separator, no '..', not absolute, no control character), so no path built
    from user input leaves results/ or golden_values/."""
    if not isinstance(name, str) or not name.strip():
        raise BadInput(f"{kind} name must not be empty")
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if (any(sep in name for sep in separators) or ".." in name or name.startswith(".")
            or any(ord(char) < 32 or ord(char) == 127 for char in name)):
        shown = name.encode("unicode_escape").decode("ascii")[:80]
        raise BadInput(f"{kind} name {shown!r} is not a plain name (no path separator, '..', leading '.', "
                       "absolute path or control character)")
    return name


def results_root() -> Path:
    return Path(os.environ.get("LOGITSMATCH_RESULTS", project_root() / "results"))


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logitsmatch"
    return Path(os.environ.get("LOGITSMATCH_CACHE", default))


def result_dir(suite: str, platform: str, toolchain: str, root: Path | None = None) -> Path:
    """results/<suite>/<platform>/<toolchain>/ — the latest run of that triple (under ``root`` if given)."""
    check_name("suite", suite), check_name("platform", platform), check_name("toolchain", toolchain)
    return (results_root() if root is None else root) / suite / platform / toolchain


def result_path(suite: str, platform: str, toolchain: str, root: Path | None = None) -> Path:
    """The published result of a triple: ``result.json`` in its result folder."""
    return result_dir(suite, platform, toolchain, root) / "result.json"


def report_paths(result: Path) -> dict[str, Path]:
    """The reports written beside a judged result: json, markdown, junit."""
    return {
        "json": result.with_name("report.json"),
        "markdown": result.with_name("report.md"),
        "junit": result.with_name("report.junit.xml"),
    }


def inputs_path(result: Path) -> Path:
    """Per-rank harness inputs of a published result (loaded-weights digests, adapter decisions)."""
    return result.with_name("inputs.json")


def capture_dir(result: Path) -> Path:
    """Module capture of a published result (``logitsmatch run --capture``; docs/capture_format.md)."""
    return result.with_name("capture")


def golden_path(suite: str, platform: str, toolchain: str) -> Path:
    """golden_values/<suite>/golden_values_<platform>_<toolchain>.json: the triple's first golden (its sidecar
    names its hardware class)."""
    check_name("suite", suite), check_name("platform", platform), check_name("toolchain", toolchain)
    return project_root() / "golden_values" / suite / f"golden_values_{platform}_{toolchain}.json"


def class_golden_path(first_golden: Path, hardware_class: str) -> Path:
    """A golden kept for a further hardware class beside the first: ``golden_values_<platform>_<toolchain>@<class>.json``."""
    check_name("hardware class", hardware_class)
    return first_golden.with_name(f"{first_golden.stem}@{hardware_class}.json")


def provenance_path(golden_or_result: Path) -> Path:
    """The sidecar next to a golden or result file; Megatron's comparator never reads it."""
    return golden_or_result.with_name(golden_or_result.stem + ".provenance.json")
