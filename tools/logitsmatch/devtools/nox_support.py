"""What the nox sessions share: toolchain parameters, interpreters, installs.

The noxfile stays a list of thin sessions; everything they have in common is
here. This module is imported by nox's own Python, so it needs only the
standard library until a session runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from logitsmatch import paths
from logitsmatch.devtools import interpreters
from logitsmatch.provenance import freshness_problem
from logitsmatch.suites import load_suite, suite_names
from logitsmatch.toolchains import Toolchain, default_suite_names, default_toolchain_name, load_toolchains

_SOURCE_TREE = Path(__file__).resolve().parents[3]  # tools/logitsmatch/devtools/ -> the project
# nox imports this file from the project's tools/; an installed copy (a test venv) finds the project as the CLI does
PROJECT = _SOURCE_TREE if (_SOURCE_TREE / "pyproject.toml").is_file() else paths.project_root()
PYPROJECT = PROJECT / "pyproject.toml"
TOOLCHAINS = load_toolchains(PYPROJECT)
DEFAULT_TOOLCHAIN = default_toolchain_name(PYPROJECT)
SUITES = suite_names(PROJECT)
DEFAULT_SUITES = default_suite_names(PYPROJECT, SUITES)


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


def routing_toolchain() -> str | None:
    """The newest CPU toolchain whose megatron-core records routing_indices (tests/test_family.py runs in it)."""
    from logitsmatch.layouts import parse_version, records_routing

    candidates = [t for t in TOOLCHAINS.values() if not t.requires_gpu and records_routing(parse_version(t.megatron_core))]
    return max(candidates, key=lambda t: parse_version(t.megatron_core)).name if candidates else None


def ensure_test_toolchains(session) -> None:
    """Build the venvs the inference tests use beyond the session's own (the routing toolchain's), unless
    the selection leaves inference out (-m "not inference") or they exist already."""
    if any("not inference" in arg for arg in session.posargs):
        return
    toolchain = routing_toolchain()
    if toolchain is None:
        return
    venv = PROJECT / ".nox" / re.sub(r"[^\w]+", "-", f"logitsmatch({toolchain})").strip("-")
    if not (venv / "bin" / "python").is_file():
        session.log(f"building the {toolchain} venv the routing test runs in")
        session.run(sys.executable, "-m", "nox", "-s", f"logitsmatch({toolchain})", "--install-only", external=True)


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
    """Suites named after ``--`` (``all``: every suite), or the default ones (``default-suites`` in pyproject.toml)."""
    names = [arg for arg in session.posargs if not arg.startswith("-")]
    if names == ["all"]:
        return SUITES
    return checked_suites(session, names) if names else DEFAULT_SUITES


def release_refusal(toolchain_name: str, suite_name: str) -> str | None:
    """Why the toolchain's megatron-core release cannot run the suite at its own layout, or None."""
    from logitsmatch import layouts

    suite = load_suite(PROJECT, suite_name)
    layout = layouts.of_suite(suite.model_args, suite.world_size, suite_name)
    return layouts.unsupported(layout, layouts.parse_version(TOOLCHAINS[toolchain_name].megatron_core))


def runnable_suites(session, toolchain_name: str, suites: list[str]) -> list[str]:
    """``suites`` less those the toolchain's release cannot run, each logged with the reason (they get no golden)."""
    runnable = []
    for suite in suites:
        refusal = release_refusal(toolchain_name, suite)
        if refusal:
            session.log(f"{suite}: not run on {toolchain_name}: {refusal}")
        else:
            runnable.append(suite)
    return runnable


def run_suites(session, toolchain_name: str) -> None:
    """Run each suite; report every failure, fail the session at the end if any failed.

    A suite the toolchain's release cannot run (``logitsmatch run`` exits 4, naming what the release
    lacks, before running anything) is listed as not run and does not fail the session: it has no
    golden for that toolchain. The decision is the run's own, made in the toolchain venv, so nox's
    interpreter needs nothing beyond the standard library.
    """
    from nox.command import CommandFailed

    from logitsmatch.errors import EXIT_UNSUPPORTED

    failed, not_run = [], []
    flags = [arg for arg in session.posargs if arg.startswith("-")]
    for suite in selected_suites(session):
        try:
            session.run("logitsmatch", "run", suite, "--toolchain", toolchain_name, *flags)
        except CommandFailed as exc:  # keep running the other suites
            (not_run if getattr(exc, "return_code", None) == EXIT_UNSUPPORTED else failed).append(suite)
    if not_run:
        session.log(f"{toolchain_name}: not run, its megatron-core release cannot (see above): {', '.join(not_run)}")
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


def ensure_fresh_results(session, toolchain_name: str, suites: list[str], flags: tuple[str, ...] = (),
                         platform: str = "cpu") -> list[str]:
    """Run the toolchain's own session (same venv, nested nox) for suites without a fresh result; return the
    suites its release can run (the others are logged with the reason)."""
    suites = runnable_suites(session, toolchain_name, suites)
    stale = stale_suites(toolchain_name, suites, platform)
    if stale:
        session.log(f"{toolchain_name}: no fresh result for {', '.join(stale)}; running them")
        session.run(
            sys.executable, "-m", "nox", "-s", f"logitsmatch({toolchain_name})", "--", *stale, *flags, "--no-compare",
            external=True,
        )
    return suites


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


def session_options(session, arguments, usage: str):
    """The session's arguments after ``--`` parsed by the parser ``arguments`` fills; a bad one fails the
    session with the usage line."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"nox -s {session.name} --", add_help=False, exit_on_error=False)
    arguments(parser)
    try:
        return parser.parse_args(session.posargs)
    except (argparse.ArgumentError, SystemExit):
        session.error(f"usage: nox -s {session.name} -- {usage}")


def run_matrix(session) -> None:
    """``nox -s matrix -- [--tag TAG ...] [SUITE ... | all] [--baseline T] [--source goldens] [--out DIR]``: the
    toolchains with any of the tags (default: all this machine can run) over the suites (default: the default suites); what has no
    fresh result runs first, unless ``--source goldens`` tabulates the committed goldens alone."""
    def arguments(parser):
        parser.add_argument("suites", nargs="*")
        parser.add_argument("--tag", action="append")
        for option in ("--baseline", "--source", "--out"):
            parser.add_argument(option)

    args = session_options(session, arguments, "[--tag TAG ...] [SUITE ... | all] [--baseline T] "
                                               "[--source auto|results|goldens] [--out DIR]")
    suites = SUITES if args.suites == ["all"] else checked_suites(session, args.suites) if args.suites else DEFAULT_SUITES
    toolchains = [name for name in runnable_toolchains() if not args.tag or set(args.tag) & set(TOOLCHAINS[name].tags)]
    if not toolchains:
        session.error(f"no toolchain has the tag {' or '.join(map(repr, args.tag))}")
    if args.baseline and args.baseline not in toolchains:
        session.error(f"baseline {args.baseline!r} is not among the selected toolchains ({', '.join(toolchains)})")
    install_harness(session, "plot")
    if args.source != "goldens":
        for toolchain in toolchains:
            ensure_fresh_results(session, toolchain, suites)
    options = [f"--{key}={value}" for key, value in (("baseline", args.baseline), ("source", args.source), ("out", args.out)) if value]
    session.run("logitsmatch", "matrix", *(f"--toolchain={name}" for name in toolchains), *(f"--suite={name}" for name in suites), *options)


def run_invariance(session) -> None:
    """``nox -s invariance -- SUITE [--layouts L,...] [--toolchain T] [--out DIR] [--abs-tol X] [--timeout S]``: run
    the layouts without a fresh result in the toolchain's own session (nested nox), then tabulate them here."""
    from logitsmatch.errors import BadInput
    from logitsmatch.layouts import parse
    from logitsmatch.run.plan import default_invariance_layouts
    from logitsmatch.run.platforms import get_platform

    def arguments(parser):
        parser.add_argument("suite")
        for option in ("--layouts", "--toolchain", "--out", "--abs-tol", "--timeout"):
            parser.add_argument(option)

    args = session_options(session, arguments, "SUITE [--layouts L,...] [--toolchain T] [--out DIR] [--abs-tol X] [--timeout S]")
    if args.suite not in SUITES:
        session.error(f"unknown suite {args.suite!r} (known: {', '.join(SUITES)})")
    toolchain = args.toolchain or DEFAULT_TOOLCHAIN
    if toolchain not in TOOLCHAINS:
        session.error(f"unknown toolchain {toolchain!r} (known: {', '.join(TOOLCHAINS)})")
    suite = load_suite(PROJECT, args.suite)
    layouts_text = args.layouts or default_invariance_layouts(suite, PROJECT)
    timeout = (f"--timeout={args.timeout}",) if args.timeout else ()
    try:
        chosen = [parse(name.strip()) for name in layouts_text.split(",")]
    except BadInput as exc:
        session.error(str(exc))
    for layout in chosen:
        label = get_platform("cpu", layout=layout).label(suite.model_args, suite.world_size)
        ensure_fresh_results(session, toolchain, [suite.name], (f"--layout={layout.name}", *timeout), label)
    install_harness(session, "plot")
    options = [f"--layouts={layouts_text}"] + [f"--{key.replace('_', '-')}={value}" for key, value in
                                               (("out", args.out), ("abs_tol", args.abs_tol)) if value]
    session.run("logitsmatch", "invariance", suite.name, f"--toolchain={toolchain}", "--no-run", *options)


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
