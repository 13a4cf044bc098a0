"""``nox -s explain``: turn toolchains and SPECs into the two environments ``logitsmatch explain`` compares.

    nox -s explain -- --baseline TOOLCHAIN (--candidate TOOLCHAIN | --megatron-core SPEC | --torch SPEC
                      | --pin NAME==VERSION ...) [SUITE ...] [--json PATH] [--markdown PATH] [--mode MODE]
                      [--source PACKAGE=GITDIR]

A SPEC is what ``prerelease`` takes (a registry version, a local wheel, a local source folder)
or ``GITDIR@REF``, a ref of a local git checkout of the package's repository. A toolchain side
runs in the toolchain's own venv, a derived candidate in one of its own (``.nox/toolchains/<name>``,
devtools.venvs); a ``GITDIR@REF`` candidate needs no venv (the ref's tree over the baseline's).
Standard library and nox's ``packaging`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.devtools.prerelease import Override, derive
from logitsmatch.errors import BadInput


@dataclass
class Request:
    baseline: str | None = None
    candidate: str | None = None
    overrides: list[Override] = field(default_factory=list)
    pins: list[str] = field(default_factory=list)
    commit: tuple[str, str] | None = None  # (package, GITDIR@REF)
    suites: list[str] = field(default_factory=list)
    passed_on: list[str] = field(default_factory=list)


def is_git_ref(spec: str) -> bool:
    if "@" not in spec:
        return False
    folder = Path(spec.rsplit("@", 1)[0])
    return (folder / ".git").exists() or (folder / "HEAD").is_file() and (folder / "objects").is_dir()


def request_of(args) -> Request:
    """The two sides ``args`` (``nox -s explain``'s parsed arguments) name; BadInput when they contradict."""
    request = Request(baseline=args.baseline, candidate=args.candidate, suites=list(args.suites),
                      passed_on=list(args.forwarded))
    for package, spec in (("megatron-core", args.megatron_core), ("torch", args.torch)):
        if spec is None:
            continue
        if is_git_ref(spec):
            if request.commit:
                raise BadInput("one GITDIR@REF candidate at a time")
            request.commit = (package, spec)
        else:
            request.overrides.append(Override(package, spec))
    for pin in args.pin:
        if "==" not in pin:
            raise BadInput(f"--pin takes NAME==VERSION, got {pin!r}")
        request.pins.append(pin)
    if not (request.candidate or request.overrides or request.pins or request.commit):
        raise BadInput("give --candidate TOOLCHAIN, or --megatron-core / --torch SPEC, or --pin NAME==VERSION")
    if request.candidate and (request.overrides or request.pins or request.commit):
        raise BadInput("--candidate TOOLCHAIN excludes --megatron-core, --torch and --pin (those derive a candidate)")
    return request


def candidate_requirements(baseline, request: Request, python: str) -> tuple[str, list[str]]:
    """Name and pip requirements of a candidate derived from the baseline toolchain."""
    candidate = derive(baseline, request.overrides, python) if request.overrides else None
    requirements = list(candidate.requirements) if candidate else list(baseline.requirements())
    name = candidate.name if candidate else f"candidate-py{python}"
    for pin in request.pins:
        package = pin.split("==", 1)[0].strip().lower()
        requirements = [r for r in requirements if r.split("==")[0].strip().lower() != package] + [pin]
        name += "-" + pin.replace("==", "")
    return name, requirements
