"""What the nox sessions share: toolchain parameters, interpreters, installs.

The noxfile stays a list of thin sessions; everything they have in common is
here. This module is imported by nox's own Python, so it needs only the
standard library until a session runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from logitsmatch import paths
from logitsmatch.devtools import interpreters
from logitsmatch.provenance import freshness_problem
from logitsmatch.suites import load_suite, suite_names
from logitsmatch.toolchains import Toolchain, default_toolchain_name, load_toolchains

PROJECT = Path(__file__).resolve().parents[3]  # tools/logitsmatch/devtools/ -> the project
PYPROJECT = PROJECT / "pyproject.toml"
TOOLCHAINS = load_toolchains(PYPROJECT)
DEFAULT_TOOLCHAIN = default_toolchain_name(PYPROJECT)
SUITES = suite_names(PROJECT)


def default_interpreter() -> str | bool:
    return interpreters.locate(TOOLCHAINS[DEFAULT_TOOLCHAIN].python) or False


def toolchain_params(nox) -> list:
    """One nox.param per toolchain: (interpreter or False, name), id = name, tags from the data."""
    params = []
    for name, toolchain in TOOLCHAINS.items():
        interpreter = interpreters.locate(toolchain.python) or False
        params.append(nox.param(interpreter, name, id=name, tags=list(toolchain.tags)))
    return params


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU (nvidia-smi lists one)."""
    if not shutil.which("nvidia-smi"):
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return listed.returncode == 0 and "GPU" in listed.stdout


def runnable_toolchains() -> list[str]:
    """Toolchains this machine can run (GPU toolchains only where there is a GPU)."""
    has_gpu = gpu_present()
    return [name for name, toolchain in TOOLCHAINS.items() if has_gpu or not toolchain.requires_gpu]


def install_toolchain(session, toolchain_name: str) -> Toolchain:
    """Pinned torch + megatron-core + common pins, then the harness itself."""
    toolchain = TOOLCHAINS[toolchain_name]
    if toolchain.requires_gpu and not gpu_present():
        session.skip(f"toolchain {toolchain.name} requires a GPU and this machine has none")
    if session.python is False:
        session.error(interpreters.missing_message(toolchain.name, toolchain.python))
    session.install(*toolchain.requirements(), str(PROJECT))
    return toolchain


def extra_requirements(extra: str) -> list[str]:
    """The pins of one of the project's optional-dependency groups."""
    import tomllib

    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"][extra]


def install_harness(session, *extras: str) -> None:
    """The harness alone (compare, record, matrix do not need torch)."""
    session.install(str(PROJECT) + (f"[{','.join(extras)}]" if extras else ""))


def checked_suites(session, names: list[str]) -> list[str]:
    """``names`` if every one is a suite (else the session fails naming it); all suites if empty."""
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        session.error(f"unknown suite {unknown[0]!r} (known: {', '.join(SUITES)})")
    return names or SUITES


def selected_suites(session) -> list[str]:
    """Suites named after ``--``, or all of them."""
    return checked_suites(session, [arg for arg in session.posargs if not arg.startswith("-")])


def run_suites(session, toolchain_name: str) -> None:
    """Run each suite; report every failure, fail the session at the end if any failed."""
    from nox.command import CommandFailed

    failed = []
    flags = [arg for arg in session.posargs if arg.startswith("-")]
    for suite in selected_suites(session):
        try:
            session.run("logitsmatch", "run", suite, "--toolchain", toolchain_name, *flags)
        except CommandFailed:  # keep running the other suites
            failed.append(suite)
    if failed:
        session.error(f"{toolchain_name}: failed suites: {', '.join(failed)}")


def split_posargs(session, flags_with_values: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Positional words and option words (an option in ``flags_with_values`` keeps its value)."""
    words, options = [], []
    args = iter(session.posargs)
    for arg in args:
        if arg.startswith("-"):
            options.append(arg)
            if arg in flags_with_values:
                options.append(next(args, ""))
        else:
            words.append(arg)
    return words, options


def stale_suites(toolchain_name: str, suites: list[str], platform: str = "cpu") -> list[str]:
    """Suites whose latest result does not stand for the suite, its weights and the toolchain as they are now."""
    from logitsmatch.run.plan import expected_weights

    stale = []
    for name in suites:
        suite = load_suite(PROJECT, name)
        result = paths.result_path(name, platform, toolchain_name)
        if freshness_problem(result, suite, expected_weights(suite, PROJECT), TOOLCHAINS[toolchain_name]):
            stale.append(name)
    return stale


def ensure_fresh_results(session, toolchain_name: str, suites: list[str]) -> None:
    """Run the toolchain's own session (same venv, nested nox) for suites without a fresh result."""
    stale = stale_suites(toolchain_name, suites)
    if stale:
        session.log(f"{toolchain_name}: no fresh result for {', '.join(stale)}; running them")
        session.run(
            sys.executable, "-m", "nox", "-s", f"logitsmatch({toolchain_name})", "--", *stale, "--no-compare",
            external=True,
        )


def toolchain_and_suites(session) -> tuple[str, list[str], list[str]]:
    """``TOOLCHAIN [SUITE ...] [--options]`` from the session's positional arguments."""
    words, options = split_posargs(session)
    if not words or words[0] not in TOOLCHAINS:
        session.error(f"usage: nox -s {session.name} -- TOOLCHAIN [SUITE ...]  (toolchains: {', '.join(TOOLCHAINS)})")
    return words[0], checked_suites(session, words[1:]), options


def run_prerelease(session) -> None:
    """Derive a candidate from a baseline toolchain, run the suites in it, judge them against the baseline."""
    from nox.command import CommandFailed

    from logitsmatch.devtools import prerelease
    from logitsmatch.errors import BadInput

    words, options = split_posargs(session, ("--megatron-core", "--torch", "--baseline", "--python"))
    try:
        overrides, settings = prerelease.parse_overrides(options)
        baseline = TOOLCHAINS[settings.get("baseline", DEFAULT_TOOLCHAIN)]
        needed = [spec for o in overrides if (spec := prerelease.requires_python(o, sys.executable))]
        python = settings.get("python") or prerelease.candidate_python(baseline, needed)
        interpreter = interpreters.find(python)
        if interpreter is None:
            raise BadInput(f"the candidate needs Python {python}, which is not installed (see README, Interpreters)")
    except KeyError as exc:
        session.error(f"unknown baseline toolchain {exc} (known: {', '.join(TOOLCHAINS)})")
    except BadInput as exc:
        session.error(str(exc))
    if python != baseline.python:
        session.warn(
            f"the candidate needs a newer Python than the baseline: Requires-Python {', '.join(needed)}; "
            f"baseline {baseline.name} uses {baseline.python}, the candidate runs on {python}"
        )
    candidate = prerelease.derive(baseline, overrides, python)
    session.log(f"candidate {candidate.name}: {' '.join(candidate.requirements)}")
    bin_dir = prerelease.create_venv(
        interpreter, PROJECT / ".nox" / "prerelease" / candidate.name, [*candidate.requirements, str(PROJECT)]
    )
    failed = []
    for suite in checked_suites(session, words):
        try:
            session.run(
                str(bin_dir / "logitsmatch"), "run", suite, "--toolchain", baseline.name, "--candidate", candidate.name,
                external=True,
            )
        except CommandFailed:
            failed.append(suite)
        reports = paths.result_dir(suite, "cpu", candidate.name)
        session.log(f"{suite}: reports in {reports} (report.md, report.junit.xml, report.json)")
    if failed:
        session.error(f"candidate {candidate.name} drifts from {baseline.name} beyond policy in: {', '.join(failed)}")


def run_explain(session) -> None:
    """Build (or reuse) the two environments and run ``logitsmatch explain`` on them."""
    import os

    from logitsmatch.devtools import explain_sides, prerelease
    from logitsmatch.errors import BadInput

    try:
        request = explain_sides.parse(list(session.posargs))
        checked_suites(session, request.suites)
        if request.baseline not in TOOLCHAINS or (request.candidate and request.candidate not in TOOLCHAINS):
            unknown = request.baseline if request.baseline not in TOOLCHAINS else request.candidate
            raise BadInput(f"unknown toolchain {unknown!r} (known: {', '.join(TOOLCHAINS)})")
    except BadInput as exc:
        session.error(str(exc))
    baseline = TOOLCHAINS[request.baseline]

    def venv(name: str, python: str, requirements: list[str]) -> str:
        interpreter = interpreters.find(python)
        if interpreter is None:
            session.error(interpreters.missing_message(name, python))
        session.log(f"environment {name}: {' '.join(requirements)}")
        bin_dir = prerelease.create_venv(interpreter, PROJECT / ".nox" / "explain" / name, [*requirements, str(PROJECT) + "[plot]"],
                                           reuse=True)
        return str(bin_dir / "python")

    base_python = venv(baseline.name, baseline.python, baseline.requirements())
    command = [base_python, "-m", "logitsmatch", "explain", *request.suites, "--baseline-python", base_python,
               "--toolchain", baseline.name, *request.passed_on]
    if request.candidate:
        other = TOOLCHAINS[request.candidate]
        command += ["--candidate-python", venv(other.name, other.python, other.requirements())]
    elif request.overrides or request.pins:
        name, requirements = explain_sides.candidate_requirements(baseline, request, baseline.python)
        command += ["--candidate-python", venv(name, baseline.python, requirements)]
    if request.commit:
        package, spec = request.commit
        command += ["--candidate-commit", f"{package}={spec}"]
    session.run(*command, external=True, env={"PYTHONPATH": str(PROJECT / "tools") + os.pathsep + os.environ.get("PYTHONPATH", "")})
