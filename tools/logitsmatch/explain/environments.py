"""Resolved environments, their diff, and intermediate environments composed by overlay.

A *side* is an interpreter plus a PYTHONPATH (a venv's python, optionally with overlay
folders in front). Its resolved environment is what that interpreter actually imports:
every installed distribution, first on sys.path wins, with version, location, files and
declared requirements, and the interpreter's version (``resolve``, run in that interpreter).

An intermediate environment moves a subset of the differing packages from the baseline to
the candidate without building a venv: the baseline side's interpreter and PYTHONPATH with,
in front, one overlay folder per moved package holding exactly the candidate's installed
files of that distribution (hard links, else copies, listed by its RECORD), cached by
name, version and origin, so a package is materialised once and reused. What cannot move by
overlay moves together, and ``closure`` says why:

* the interpreter: a different Python means other compiled extensions; every differing
  package that ships compiled code moves with it (such environments start from the
  candidate's interpreter and bring the baseline's versions of the others back by overlay);
* declared requirements: moving a package whose new version the other side's packages
  exclude (e.g. megatron-core 0.15.3 requires numpy<2) moves those packages too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.errors import BadInput

INTERPRETER = "python"  # the unit name of the interpreter in package sets
HARNESS = "logitsmatch"  # never a differing package: both sides run the project's own harness

_PROBE = r"""
import importlib.metadata as md, json, sys, sysconfig
seen = {}
for dist in md.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-").replace(".", "-")
    if not name or name in seen:
        continue
    files = [str(f) for f in (dist.files or [])]
    hashes = {str(f): f.hash.value for f in (dist.files or []) if f.hash is not None}
    location = str(dist.locate_file(""))
    try:
        commit = (json.loads(dist.read_text("direct_url.json") or "{}").get("vcs_info") or {}).get("commit_id")
    except ValueError:
        commit = None
    seen[name] = {"name": name, "version": dist.version, "location": location,
                  "dist_info": str(getattr(dist, "_path", "")), "files": files,
                  "compiled": any(f.endswith((".so", ".pyd")) or ".so." in f for f in files),
                  "requires": dist.requires or [], "commit": commit, "hashes": hashes}
print(json.dumps({"python": sys.version.split()[0], "executable": sys.executable,
                  "abi": sysconfig.get_config_var("SOABI"), "distributions": seen}))
"""


@dataclass(frozen=True)
class Side:
    """An interpreter and what is put in front of its sys.path."""

    name: str
    python: str
    pythonpath: tuple[str, ...] = ()

    def env(self, extra_path: tuple[str, ...] = ()) -> dict[str, str]:
        """Environment variables for a process of this side (``extra_path`` first: the harness)."""
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        path = [*extra_path, *self.pythonpath]
        if path:
            env["PYTHONPATH"] = os.pathsep.join(path)
        return env


@dataclass
class Environment:
    side: Side
    python: str
    abi: str
    distributions: dict[str, dict]

    def version(self, name: str) -> str | None:
        if name == INTERPRETER:
            return self.python
        entry = self.distributions.get(name)
        return None if entry is None else entry["version"]

    def listing(self) -> dict[str, str]:
        return {"python": self.python, **{name: d["version"] for name, d in sorted(self.distributions.items())}}


def resolve(side: Side) -> Environment:
    """What ``side``'s interpreter imports (run in that interpreter, with that PYTHONPATH)."""
    completed = subprocess.run([side.python, "-c", _PROBE], capture_output=True, text=True, env=side.env(), timeout=120)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BadInput(f"cannot list the packages of {side.name} ({side.python}): {last}")
    found = json.loads(completed.stdout)
    return Environment(side, found["python"], found["abi"] or "", found["distributions"])


@dataclass(frozen=True)
class Change:
    name: str
    baseline: str | None  # None: not installed on that side
    candidate: str | None

    def label(self) -> str:
        return f"{self.name} {self.baseline or '(absent)'} -> {self.candidate or '(absent)'}"


def diff(baseline: Environment, candidate: Environment) -> list[Change]:
    """Every distribution (and the interpreter) whose version differs, the harness itself left out."""
    changes = []
    if baseline.python != candidate.python:
        changes.append(Change(INTERPRETER, baseline.python, candidate.python))
    for name in sorted(set(baseline.distributions) | set(candidate.distributions)):
        if name == HARNESS:
            continue
        a, b = baseline.version(name), candidate.version(name)
        if a != b or _origin(baseline, name) != _origin(candidate, name) and _files_differ(baseline, candidate, name):
            changes.append(Change(name, a, b))
    return changes


def _origin(env: Environment, name: str) -> str | None:
    entry = env.distributions.get(name)
    return None if entry is None else entry["location"]


def _files_differ(a: Environment, b: Environment, name: str) -> bool:
    """Same version from another place (an overlay of a planted or rebuilt package): compare the files,
    by the hashes their RECORDs list where both have one, else by content."""
    x, y = a.distributions[name], b.distributions[name]
    if sorted(x["files"]) != sorted(y["files"]):
        return True
    hx, hy = x.get("hashes", {}), y.get("hashes", {})
    for relative in x["files"]:
        if relative.startswith("..") or relative.endswith((".pyc", "RECORD", "INSTALLER", "direct_url.json")):
            continue
        if relative in hx and relative in hy:
            if hx[relative] != hy[relative]:
                return True
            continue
        p, q = Path(x["location"]) / relative, Path(y["location"]) / relative
        try:
            if p.stat().st_size != q.stat().st_size or p.read_bytes() != q.read_bytes():
                return True
        except OSError:
            return True
    return False


# --- what must move together ---------------------------------------------------------------

@dataclass
class Plan:
    """The units of change: each is a set of package names that moves as one, and why."""

    units: list[tuple[str, ...]]
    reasons: dict[str, str] = field(default_factory=dict)  # package -> why it cannot move alone


def _requirements(entry: dict, python: str) -> list:
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for text in entry.get("requires", []):
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": "", "python_full_version": python,
                                                                             "python_version": ".".join(python.split(".")[:2])}):
            continue
        found.append(requirement)
    return found


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def violations(baseline: Environment, candidate: Environment, moved: set[str]) -> list[tuple[str, str, str]]:
    """Declared requirements the composed environment breaks: (package, requirement, needed package)."""
    compiled = {name for name in moved if name != INTERPRETER}
    python = candidate.python if INTERPRETER in moved else baseline.python
    composed = {}
    for name in set(baseline.distributions) | set(candidate.distributions):
        side = candidate if name in compiled else baseline
        if name in side.distributions:
            composed[name] = side.distributions[name]
    problems = []
    for name, entry in composed.items():
        for requirement in _requirements(entry, python):
            target = composed.get(_norm(requirement.name))
            if target is None:
                continue
            if requirement.specifier and not requirement.specifier.contains(target["version"], prereleases=True):
                problems.append((name, f"{entry['name']} {entry['version']} requires {requirement}", _norm(requirement.name)))
    return problems


def closure(baseline: Environment, candidate: Environment, moved: set[str], changed: set[str]) -> tuple[set[str], dict[str, str]]:
    """``moved`` plus what must move with it (interpreter ties, declared requirements), and why."""
    moved = set(moved)
    reasons: dict[str, str] = {}
    if INTERPRETER in changed:
        tied = {name for name in changed if name != INTERPRETER and (_compiled(baseline, name) or _compiled(candidate, name))}
        if moved & (tied | {INTERPRETER}):
            for name in tied | {INTERPRETER}:
                if name not in moved:
                    reasons[name] = f"moves with the interpreter ({baseline.python} -> {candidate.python}): compiled for it"
            moved |= tied | {INTERPRETER}
    for _ in range(len(changed) + 1):
        added = False
        for package, why, needed in violations(baseline, candidate, moved):
            for name in (package, needed):
                if name in changed and name not in moved:
                    moved.add(name)
                    reasons[name] = why
                    added = True
        if not added:
            break
    return moved, reasons


def _compiled(env: Environment, name: str) -> bool:
    entry = env.distributions.get(name)
    return bool(entry and entry["compiled"])


# --- composing an environment -----------------------------------------------------------------

def overlay(entry: dict, cache: Path) -> Path:
    """A folder holding exactly one installed distribution's files (hard links where possible), cached."""
    listing = json.dumps([entry["location"], entry["dist_info"], sorted(entry["files"]), entry.get("hashes", {})], sort_keys=True)
    origin = hashlib.sha256(listing.encode()).hexdigest()[:10]  # where from and exactly which files
    folder = cache / "overlays" / f"{entry['name']}-{entry['version']}-{origin}"
    if (folder / ".complete").is_file():
        return folder
    staging = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    location = Path(entry["location"])
    for relative in entry["files"]:
        if relative.startswith("..") or "/__pycache__/" in f"/{relative}":
            continue  # console scripts beside the venv's bin/, byte code
        source, target = location / relative, staging / relative
        if not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / ".complete").write_text(json.dumps({"name": entry["name"], "version": entry["version"], "from": entry["location"]}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def compose(baseline: Environment, candidate: Environment, moved: set[str], cache: Path, name: str) -> Side:
    """The environment with ``moved`` at the candidate's versions and everything else at the baseline's."""
    if INTERPRETER in moved:
        base, other, back = candidate, baseline, {n for n in set(baseline.distributions) | set(candidate.distributions)
                                                  if n not in moved and n != HARNESS and baseline.version(n) != candidate.version(n)}
    else:
        base, other, back = baseline, candidate, {n for n in moved if n != HARNESS}
    folders = []
    for package in sorted(back):
        entry = other.distributions.get(package)
        if entry is None:
            raise BadInput(f"{package} is installed on one side only and cannot be removed by an overlay")
        folders.append(str(overlay(entry, cache)))
    return Side(name, base.side.python, (*folders, *base.side.pythonpath))
