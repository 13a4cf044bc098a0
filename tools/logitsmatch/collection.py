"""Result trees from many machines merged into one, keyed by suite, platform, toolchain and hardware class.

A team spreads the matrix over CI jobs or Slurm jobs; each leaves a ``results/`` tree (or an artifact
folder holding one). ``logitsmatch collect`` merges them into

    <into>/<suite>/<platform>/<toolchain>/<hardware class>/result.json (+ .provenance.json, inputs.json)
    <into>/collected.json   which origin each key came from, and its sha256

A result's key is read from its provenance, never from the folder it was found in; a result whose
suite config is not this checkout's is refused, and so are two different results for one key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import hardware, paths
from logitsmatch.errors import BadInput
from logitsmatch.files import output_folder, read_input, write_atomic
from logitsmatch.provenance import freshness_problem

MANIFEST = "collected.json"
RESULT = "result.json"
_BESIDE = ("inputs.json",)  # copied along when present (explain reads the loaded-weights digests)


@dataclass(frozen=True)
class Key:
    suite: str
    platform: str
    toolchain: str
    hardware_class: str

    def folder(self, into: Path) -> Path:
        return into / self.suite / self.platform / self.toolchain / self.hardware_class

    def __str__(self) -> str:
        return f"{self.suite} / {self.platform} / {self.toolchain} / {self.hardware_class}"


@dataclass(frozen=True)
class Found:
    key: Key
    result: Path
    sha256: str


def _safe_part(value, what: str, result: Path) -> str:
    """A provenance field used as a folder name: a plain name, never a path."""
    if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value:
        raise BadInput(f"{result}: its provenance's {what} {value!r} is not a plain name")
    return value


def results_under(root: Path) -> list[Path]:
    """Every published result below ``root`` (a run's private ``.runs/`` folders are not results)."""
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder")
    return sorted(path for path in root.rglob(RESULT) if ".runs" not in path.parts and path.is_file())


def identify(result: Path, project: Path, expected_weights) -> Found:
    """The key of one result, after checking that it ran this checkout's suite config and weights."""
    from logitsmatch.suites import load_suite, suite_names

    sidecar = paths.provenance_path(result)
    try:
        record = json.loads(read_input(sidecar, "provenance sidecar"))
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{result}: no readable provenance sidecar {sidecar.name} ({exc.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise BadInput(f"{result}: its provenance sidecar is not an object")
    suite_name = _safe_part(record.get("suite"), "suite", result)
    if suite_name not in suite_names(project):
        raise BadInput(f"{result}: suite {suite_name!r} is not in this checkout")
    suite = load_suite(project, suite_name)
    problem = freshness_problem(result, suite, expected_weights(suite))
    if problem:
        raise BadInput(f"{result} cannot stand for {suite_name} in this checkout: {problem}")
    identity = hardware.of_provenance(record)
    key = Key(suite_name, _safe_part(record.get("platform"), "platform", result),
              _safe_part(record.get("toolchain"), "toolchain", result),
              _safe_part(identity["class"] if identity else "unknown", "hardware class", result))
    return Found(key, result, hashlib.sha256(read_input(result)).hexdigest())


def read_manifest(into: Path) -> dict:
    manifest = into / MANIFEST
    if not manifest.is_file():
        return {}
    try:
        entries = json.loads(read_input(manifest))
    except (ValueError, RecursionError):
        raise BadInput(f"{manifest} is not JSON") from None
    if not isinstance(entries, dict):
        raise BadInput(f"{manifest} is not an object")
    return entries


def _copy_atomic(source: Path, target: Path) -> None:
    write_atomic(output_folder(target.parent) / target.name, read_input(source))


def collect(sources: list[Path], into: Path, project: Path, expected_weights) -> dict[str, dict]:
    """Merge the result trees ``sources`` into ``into``; return the manifest entries added.

    Everything is checked before anything is written: a stale result, a conflict between two sources,
    or a conflict with what ``into`` holds already is bad input and leaves ``into`` as it was.
    """
    into_resolved = into.resolve()
    found: dict[Key, Found] = {}
    for source in sources:
        if source.resolve() == into_resolved:
            raise BadInput(f"{source} is the folder collected into; name another --into")
        for result in results_under(source):
            if into_resolved in result.resolve().parents:
                continue
            entry = identify(result, project, expected_weights)
            earlier = found.get(entry.key)
            if earlier and earlier.sha256 != entry.sha256:
                raise BadInput(f"two different results for {entry.key}: {earlier.result} and {entry.result}")
            found.setdefault(entry.key, entry)
    if not found:
        raise BadInput(f"no results under {', '.join(map(str, sources))}")
    manifest = read_manifest(into)
    for key, entry in found.items():
        held = manifest.get(str(key))
        if held and held["sha256"] != entry.sha256:
            raise BadInput(f"two different results for {key}: {held['origin']} (collected earlier) and {entry.result}")
    added = {}
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for key, entry in sorted(found.items(), key=lambda item: str(item[0])):
        folder = key.folder(into)
        _copy_atomic(entry.result, folder / RESULT)
        _copy_atomic(paths.provenance_path(entry.result), paths.provenance_path(folder / RESULT))
        for name in _BESIDE:
            if (entry.result.parent / name).is_file():
                _copy_atomic(entry.result.parent / name, folder / name)
        added[str(key)] = {"suite": key.suite, "platform": key.platform, "toolchain": key.toolchain,
                           "hardware_class": key.hardware_class, "origin": str(entry.result),
                           "sha256": entry.sha256, "collected": date}
    write_atomic(output_folder(into) / MANIFEST, json.dumps({**manifest, **added}, indent=1, sort_keys=True))
    return added


def collected_result(into: Path, suite: str, platform: str, toolchain: str, hardware_class: str | None = None) -> Path | None:
    """The collected result of a (suite, platform, toolchain), of ``hardware_class`` or of the only class there is.

    More than one class and none named is bad input naming them: which one a table or golden stands for is the
    user's choice, not the harness's.
    """
    folder = into / suite / platform / toolchain
    if not folder.is_dir():
        return None
    classes = sorted(child.name for child in folder.iterdir() if (child / RESULT).is_file())
    if hardware_class is not None:
        return folder / hardware_class / RESULT if hardware_class in classes else None
    if len(classes) > 1:
        raise BadInput(f"{toolchain} has results of {len(classes)} hardware classes for {suite} in {into} "
                       f"({', '.join(classes)}): name one with --hardware-class")
    return folder / classes[0] / RESULT if classes else None


def is_collection(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()
