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
import re
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import hardware, paths
from logitsmatch.errors import BadInput
from logitsmatch.files import folder_lock, output_folder, read_input, write_atomic
from logitsmatch.provenance import freshness_problem, read_sidecar

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


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@=-]{0,199}")


def _safe_part(value, what: str, result: Path) -> str:
    """A provenance field used as a folder name: a plain visible name, never a path, a hidden folder or a
    control character (letters, digits and ``._+@=-``, not first, at most 200)."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value):
        raise BadInput(f"{result}: its provenance's {what} {value!r} is not a plain name")
    return value


def results_under(root: Path) -> list[Path]:
    """Every published result below ``root`` (a run's private ``.runs/`` folders are not results)."""
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder")
    found = sorted(path for path in root.rglob(RESULT) if ".runs" not in path.parts and path.is_file())
    for path in found:
        if path.is_symlink():
            raise BadInput(f"{path}: is a symbolic link, not a result a run wrote")
    return found


def identify(result: Path, project: Path, expected_weights, suites=None) -> Found:
    """The key of one result, after checking that it ran this checkout's suite config and weights.

    ``suites``: the suites and their expected weights by name, loaded once per collect (a suite's YAML
    and weights spec cost milliseconds; a collection holds thousands of results of a few suites).
    """
    suites = suites or _SuiteBook(project, expected_weights)
    record = read_sidecar(paths.provenance_path(result))
    suite_name = _safe_part(record.get("suite"), "suite", result)
    if suite_name not in suites.names:
        raise BadInput(f"{result}: suite {suite_name!r} is not in this checkout")
    suite, weights = suites.get(suite_name)
    problem = freshness_problem(result, suite, weights)
    if problem:
        raise BadInput(f"{result} cannot stand for {suite_name} in this checkout: {problem}")
    identity = hardware.of_provenance(record)
    key = Key(suite_name, _safe_part(record.get("platform"), "platform", result),
              _safe_part(record.get("toolchain"), "toolchain", result),
              _safe_part(identity["class"] if identity else "unknown", "hardware class", result))
    body = read_input(result)
    try:
        if not isinstance(json.loads(body), dict):
            raise ValueError
    except (ValueError, RecursionError):
        raise BadInput(f"{result}: not a result (a JSON object of requests)") from None
    return Found(key, result, hashlib.sha256(body).hexdigest())


class _SuiteBook:
    """This checkout's suites, each loaded once, with the weights its results must have been run with."""

    def __init__(self, project: Path, expected_weights):
        from logitsmatch.suites import suite_names

        self.project, self.expected_weights = project, expected_weights
        self.names = set(suite_names(project))
        self.loaded: dict[str, tuple] = {}

    def get(self, name: str) -> tuple:
        from logitsmatch.suites import load_suite

        if name not in self.loaded:
            suite = load_suite(self.project, name)
            self.loaded[name] = (suite, self.expected_weights(suite))
        return self.loaded[name]


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
    for key, entry in entries.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(field), str) for field in ("sha256", "origin")):
            raise BadInput(f"{manifest}: entry {key!r} is not an object with the strings 'sha256' and 'origin'")
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
    suites = _SuiteBook(project, expected_weights)
    for source in sources:
        if source.resolve() == into_resolved:
            raise BadInput(f"{source} is the folder collected into; name another --into")
        for result in results_under(source):
            if into_resolved in result.resolve().parents:
                continue
            entry = identify(result, project, expected_weights, suites)
            earlier = found.get(entry.key)
            if earlier and earlier.sha256 != entry.sha256:
                raise BadInput(f"two different results for {entry.key}: {earlier.result} and {entry.result}")
            found.setdefault(entry.key, entry)
    if not found:
        raise BadInput(f"no results under {', '.join(map(str, sources))}")
    with folder_lock(into, "collecting"):  # a second collect into the same folder waits, then sees these keys
        return _merge(found, into)


def _merge(found: dict[Key, Found], into: Path) -> dict[str, dict]:
    """Under the folder's lock: refuse a key ``into`` holds with other content, then copy and list the rest."""
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


def collected_result(
    into: Path, suite: str, platform: str, toolchain: str, hardware_class: str | None = None
) -> Path | None:
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
