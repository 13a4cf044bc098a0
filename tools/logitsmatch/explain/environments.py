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
* declared requirements (``ties``): a moved distribution takes what its metadata requires and
  the baseline does not satisfy (torch 2.9.1 its nvidia-* wheels); a move that breaks a
  requirement of a baseline distribution that stays takes that distribution (megatron-core
  0.15.3 requires numpy<2: numpy 2 moves only with megatron-core).

``requirement_groups`` partitions the differing distributions into the units the package
search moves: each with the companions its metadata requires.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
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
        env = {
            key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        }
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

def _requirements(entry: dict, python: str) -> list:
    """``entry``'s declared requirements that apply to an interpreter of version ``python`` (no extras)."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for text in entry.get("requires", []):
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        environment = {"extra": "", "python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        found.append(requirement)
    return found


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _satisfies(entry: dict | None, requirement) -> bool:
    return entry is not None and (not requirement.specifier
                                  or requirement.specifier.contains(entry["version"], prereleases=True))


def _described(entry: dict | None) -> str:
    return "none" if entry is None else entry["version"]


def ties(baseline: Environment, candidate: Environment, moved: set[str],
         changed: set[str]) -> list[tuple[str, str, str]]:
    """What the environment with ``moved`` at the candidate's versions still lacks, as (package to move,
    the distribution whose requirement asks for it, why). Two directions, both from installed metadata:

    * *requires*: a moved distribution requires (markers evaluated for the composed interpreter) a
      distribution that the baseline lacks or has at a version outside the requirement, and the candidate
      has one that satisfies it: that one moves too ("torch 2.9.1 requires nvidia-cudnn-cu12==9.10.2.21;
      the baseline has none");
    * *breaks*: moving a distribution to its candidate version breaks a requirement of a baseline
      distribution that stays; that distribution moves too, to its candidate version, whose own
      requirement accepts it ("megatron-core 0.15.3 requires numpy<2.0.0 ...").

    A requirement broken on one side alone (both ends from the same side) is that side's, not a tie.
    """
    python = candidate.python if INTERPRETER in moved else baseline.python
    found = []
    for name in sorted(set(baseline.distributions) | set(candidate.distributions)):
        name_moved = name in moved
        entry = (candidate if name_moved else baseline).distributions.get(name)
        if entry is None:
            continue
        for requirement in _requirements(entry, python):
            target = _norm(requirement.name)
            if target not in changed or target == HARNESS:
                continue
            target_moved = target in moved
            present = (candidate if target_moved else baseline).distributions.get(target)
            if _satisfies(present, requirement) or name_moved == target_moved:
                continue
            if name_moved:  # requires: the candidate's distribution needs the candidate's target
                if _satisfies(candidate.distributions.get(target), requirement):
                    found.append((target, name, f"{name} {entry['version']} requires {requirement}; "
                                                f"the baseline has {_described(present)}"))
            elif name in changed and _satisfies(baseline.distributions.get(target), requirement):
                # breaks: the baseline's distribution, satisfied before, rejects the move
                found.append((name, target, f"the baseline's {name} {entry['version']} requires {requirement}; "
                                            f"moved, {target} is {present['version']}"))
    return found


def closure(
    baseline: Environment, candidate: Environment, moved: set[str], changed: set[str]
) -> tuple[set[str], dict[str, str]]:
    """``moved`` plus, transitively, what must move with it (interpreter ties, declared requirements in
    both directions, see ``ties``), and why each addition moved."""
    moved = set(moved)
    reasons: dict[str, str] = {}
    if INTERPRETER in changed:
        tied = {
            name
            for name in changed
            if name != INTERPRETER and (_compiled(baseline, name) or _compiled(candidate, name))
        }
        if moved & (tied | {INTERPRETER}):
            for name in tied | {INTERPRETER}:
                if name not in moved:
                    reasons[name] = (
                        f"moves with the interpreter ({baseline.python} -> {candidate.python}): compiled for it"
                    )
            moved |= tied | {INTERPRETER}
    while True:
        added = [(name, why) for name, _, why in ties(baseline, candidate, moved, changed) if name not in moved]
        if not added:
            return moved, reasons
        for name, why in added:
            moved.add(name)
            reasons.setdefault(name, why)


@dataclass(frozen=True)
class Group:
    """A unit of the package search: a distribution and what its metadata requires that the baseline
    does not satisfy, transitively (its companions), with why each companion is in it."""

    lead: str
    members: tuple[str, ...]  # the lead first
    reasons: tuple[tuple[str, str], ...] = ()  # (member, why it is in the group)

    def label(self) -> str:
        others = len(self.members) - 1
        return self.lead + (f" (with {others} requirement{'s' if others != 1 else ''})" if others else "")


def requirement_groups(baseline: Environment, candidate: Environment, changes: list[Change]) -> list[Group]:
    """The differing distributions partitioned into groups that delta debugging moves as wholes.

    A distribution joins the group of each one whose candidate metadata requires it where the baseline
    does not satisfy that (the *requires* ties, transitively; two leads sharing a requirement share a
    group). The lead is the member nothing else in the group requires (the first such by name): torch
    with its nvidia-* wheels and triton. The *breaks* ties and the interpreter's stay out of the groups:
    ``closure`` adds them to each tested configuration, in their own direction.
    """
    changed = {change.name for change in changes}
    order = [change.name for change in changes]
    needs: dict[str, dict[str, str]] = {}
    for name in order:
        if name == INTERPRETER or name not in candidate.distributions:
            needs[name] = {}
            continue
        entry = candidate.distributions[name]
        needs[name] = {}
        for requirement in _requirements(entry, candidate.python if INTERPRETER in changed else baseline.python):
            target = _norm(requirement.name)
            present = baseline.distributions.get(target)
            if target in changed and target != name and not _satisfies(present, requirement) and _satisfies(
                    candidate.distributions.get(target), requirement):
                needs[name][target] = (f"{name} {entry['version']} requires {requirement}; "
                                       f"the baseline has {_described(present)}")
    parent = {name: name for name in order}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name, required in needs.items():
        for target in required:
            parent[find(target)] = find(name)
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(find(name), []).append(name)
    groups = []
    for names in members.values():
        required_inside = {target for name in names for target in needs[name]}
        lead = next((name for name in names if name not in required_inside), names[0])
        reasons, seen = [], {lead}
        queue = [lead, *[name for name in names if name not in required_inside and name != lead]]
        while queue:  # breadth first from the lead: its own requirements first, then theirs
            for target, why in needs[queue.pop(0)].items():
                if target not in seen:
                    seen.add(target)
                    reasons.append((target, why))
                    queue.append(target)
        groups.append(Group(lead, (lead, *[name for name in names if name != lead]), tuple(reasons)))
    return sorted(groups, key=lambda group: order.index(group.lead))


def _compiled(env: Environment, name: str) -> bool:
    entry = env.distributions.get(name)
    return bool(entry and entry["compiled"])


# --- composing an environment -----------------------------------------------------------------

def link_or_copy(source, target):
    """A hard link to ``source`` where the file system allows one (no bytes copied), else a copy with its metadata.
    Returns ``target``, as ``shutil.copytree``'s ``copy_function`` may."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def overlay(entry: dict, cache: Path) -> Path:
    """A folder holding exactly one installed distribution's files (hard links where possible), cached."""
    listing = json.dumps(
        [entry["location"], entry["dist_info"], sorted(entry["files"]), entry.get("hashes", {})], sort_keys=True
    )
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
        link_or_copy(source, target)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / ".complete").write_text(
        json.dumps({"name": entry["name"], "version": entry["version"], "from": entry["location"]})
    )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def compose(baseline: Environment, candidate: Environment, moved: set[str], cache: Path, name: str) -> Side:
    """The environment with ``moved`` at the candidate's versions and everything else at the baseline's."""
    if INTERPRETER in moved:
        base, other, back = (
            candidate,
            baseline,
            {
                n
                for n in set(baseline.distributions) | set(candidate.distributions)
                if n not in moved and n != HARNESS and baseline.version(n) != candidate.version(n)
            },
        )
    else:
        base, other, back = baseline, candidate, {n for n in moved if n != HARNESS}
    folders = []
    for package in sorted(back):
        entry = other.distributions.get(package)
        if entry is None:
            raise BadInput(f"{package} is installed on one side only and cannot be removed by an overlay")
        folders.append(str(overlay(entry, cache)))
    return Side(name, base.side.python, (*folders, *base.side.pythonpath))
