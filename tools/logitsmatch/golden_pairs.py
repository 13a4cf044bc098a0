"""A golden and its provenance sidecar as one record: replaced together, checked on every read.

Two files cannot be renamed at once, so a record is replaced through a commit marker: both new files
are written as temp files beside the golden, then ``.<golden>.pending`` names them (one atomic write:
the commit point), then both are renamed into place and the marker is removed. Whoever next takes
the folder's lock finishes a marked replacement (both temp files become the pair) and removes
unmarked temp files (a writer stopped before its commit point). So after a crash, a signal, a full
disk or a second writer, a reader sees the old pair or the new pair, never one of each; and the
sidecar's ``recorded.golden_sha256`` is checked against the golden on every read, so a pair changed
by hand is named as exactly that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.files import creation_mode, folder_lock, read_input
from logitsmatch.paths import provenance_path


def _pending_marker(golden: Path) -> Path:
    return golden.with_name(f".{golden.name}.pending")


def _temp_prefix(target: Path) -> str:
    """Temp names stay within the file system's name limit whatever the target's length."""
    return f".{target.name[:120]}."


def _temp_beside(target: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, creation_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def _interrupted(golden: Path) -> bool:
    """Whether a write of ``golden`` was left unfinished: a commit marker or a temp file beside it."""
    marker = _pending_marker(golden)
    return marker.is_file() or any(
        any(golden.parent.glob(f"{_temp_prefix(target)}*.tmp")) for target in (golden, provenance_path(golden), marker))


def finish_interrupted(golden: Path) -> None:
    """Under the folder's lock: complete a committed replacement, drop an uncommitted one's temp files.

    The marker names temp files beside the golden only (a name is taken as a bare file name).
    """
    marker = _pending_marker(golden)
    if marker.is_file():
        try:
            pending = json.loads(marker.read_text())
            moves = [(golden.parent / Path(pending["sidecar"]).name, provenance_path(golden)),
                     (golden.parent / Path(pending["golden"]).name, golden)]
        except (OSError, ValueError, KeyError, TypeError):
            moves = []
        for temp, target in moves:
            if temp.is_file():
                os.replace(temp, target)
        marker.unlink()
    for target in (golden, provenance_path(golden), marker):
        for stale in golden.parent.glob(f"{_temp_prefix(target)}*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_pair(golden: Path, body: bytes, provenance: dict) -> None:
    """Replace ``golden`` and its sidecar by ``body`` and ``provenance`` as one record.

    ``provenance["recorded"]["golden_sha256"]`` is set to the body's sha256. A second writer of the
    same golden while this one holds the lock is one BadInput line naming this one.
    """
    golden.parent.mkdir(parents=True, exist_ok=True)
    provenance.setdefault("recorded", {})["golden_sha256"] = hashlib.sha256(body).hexdigest()
    sidecar_body = json.dumps(provenance, indent=1, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
    with folder_lock(golden.parent, f"recording {golden.name}", wait=False):
        finish_interrupted(golden)
        temps: list[Path] = []
        try:
            temps.append(_temp_beside(provenance_path(golden), sidecar_body))
            temps.append(_temp_beside(golden, body))
            marker = _temp_beside(_pending_marker(golden),
                                  json.dumps({"sidecar": temps[0].name, "golden": temps[1].name}).encode())
            os.replace(marker, _pending_marker(golden))  # the commit point
        except OSError as exc:
            for temp in temps:
                with contextlib.suppress(OSError):
                    temp.unlink()
            raise BadInput(f"{golden}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            for temp in temps:
                with contextlib.suppress(OSError):
                    temp.unlink()
            raise
        finish_interrupted(golden)


def mismatch(golden: Path) -> str | None:
    """Why ``golden`` and its sidecar are not one record (None: they are, or the sidecar records no sha256).

    An interrupted write is finished (or its temp files removed) first, unless a writer holds the folder.
    """
    if _interrupted(golden):
        with contextlib.suppress(BadInput, OSError), folder_lock(golden.parent, "checking a golden", wait=False):
            finish_interrupted(golden)
    sidecar = provenance_path(golden)
    if not sidecar.is_file() or not golden.is_file():
        return None
    try:
        recorded = json.loads(read_input(sidecar, "provenance sidecar")).get("recorded")
    except (ValueError, RecursionError, AttributeError):
        return f"{sidecar.name} is not a JSON object"
    if not isinstance(recorded, dict) or "golden_sha256" not in recorded:
        return None
    expected = recorded["golden_sha256"]
    actual = hashlib.sha256(read_input(golden, "golden")).hexdigest()
    if expected != actual:
        return (f"{golden.name} does not match its sidecar (sha256 {actual[:12]}, the sidecar records "
                f"{str(expected)[:12]}): the pair was changed outside `logitsmatch record`")
    return None


def require_one_record(golden: Path, suite: str, toolchain: str) -> None:
    """BadInput when ``golden`` and its sidecar are not one record, naming the commands that repair it."""
    problem = mismatch(golden)
    if problem:
        raise BadInput(f"{problem}; restore both from git (git checkout -- {golden.name} "
                       f"{provenance_path(golden).name}) or record anew (nox -s record -- {toolchain} {suite} --force)")


def goldens_under(folder: Path) -> list[Path]:
    """The golden files below ``folder`` (``golden_values_*.json``, not their sidecars)."""
    return sorted(path for path in folder.rglob("golden_values_*.json")
                  if not path.name.endswith(".provenance.json") and path.is_file())


def verify(golden: Path) -> str | None:
    """What is wrong with ``golden`` as a record (its sidecar unreadable or of the wrong types, or not matching
    it); None when it is one record or has no sidecar at all (a golden logitsmatch did not record)."""
    from logitsmatch.provenance import read_sidecar

    try:
        if provenance_path(golden).exists():
            read_sidecar(provenance_path(golden))
        return mismatch(golden)
    except BadInput as exc:
        return str(exc)
