"""What the nox sessions share: toolchain parameters, each session's arguments, the toolchain venvs.

The noxfile stays a list of thin sessions; everything they have in common is here. A session that
takes arguments after ``--`` declares only its own, in its parser below (``SessionParser``: a bad
one fails the session with its usage); every other word goes to the logitsmatch command the
session runs, which validates it, so the sessions never re-list the CLI's options. Every toolchain
(and every candidate derived from one) runs in one venv at an explicit folder
(``toolchains.toolchain_venv``, built by ``devtools.venvs``): ``logitsmatch(<toolchain>)``,
``invariance``, ``prerelease``, ``explain`` and the tests share it, and ``matrix``/``record`` run
what has no fresh result in it (``run.freshness``). This module is imported by nox's own Python,
so it needs only the standard library until a session runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from logitsmatch import paths
from logitsmatch.devtools import interpreters
from logitsmatch.devtools.session_outcome import carry, fail, outcomes_summary, run_command, session_summary
from logitsmatch.errors import BadInput, ExitCode
from logitsmatch.family import family_suites
from logitsmatch.suites import load_suite, suite_names
from logitsmatch.toolchains import (
    Toolchain,
    add_toolchain_option,
    check_toolchain,
    default_suite_names,
    default_toolchain_name,
    load_toolchains,
    routing_toolchain,
    toolchain_venv,
)

_SOURCE_TREE = Path(__file__).resolve().parents[3]  # tools/logitsmatch/devtools/ -> the project
# nox imports this file from the project's tools/; an installed copy (a test venv) finds the project as the CLI does
PROJECT = _SOURCE_TREE if (_SOURCE_TREE / "pyproject.toml").is_file() else paths.project_root()
PYPROJECT = PROJECT / "pyproject.toml"
TOOLCHAINS = load_toolchains(PYPROJECT)
DEFAULT_TOOLCHAIN = default_toolchain_name(PYPROJECT)
SUITES = suite_names(PROJECT)
GROUPS = {"all": SUITES, "family": family_suites(PROJECT)}  # names of suite groups: every suite; every case that runs
DEFAULT_SUITES = default_suite_names(PYPROJECT, SUITES)


# --- toolchains and their venvs ---------------------------------------------------------------


def default_interpreter() -> str | bool:
    return interpreters.locate(TOOLCHAINS[DEFAULT_TOOLCHAIN].python) or False


def toolchain_params(nox) -> list:
    """One nox.param per toolchain: its name (also the id) and its tags, from the data."""
    return [nox.param(name, id=name, tags=list(toolchain.tags)) for name, toolchain in TOOLCHAINS.items()]


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


def build_venv(name: str, python: str, requirements: list[str], log=print) -> Path:
    """The bin folder of venv ``name`` (``.nox/toolchains/<name>``), built or brought up to ``requirements`` first;
    without a session, for the fan-out's build jobs (BadInput when it cannot be built)."""
    from logitsmatch.devtools import venvs

    interpreter = interpreters.find(python)
    if interpreter is None:
        raise BadInput(interpreters.missing_message(name, python))
    return venvs.ensure(interpreter, toolchain_venv(PROJECT, name), requirements, PROJECT, log)


def venv_bin(session, name: str, python: str, requirements: list[str]) -> Path:
    """``build_venv`` for a session: what cannot be built fails the session."""
    try:
        return build_venv(name, python, requirements, session.log)
    except BadInput as exc:
        fail(session, ExitCode.RUN_FAILED, str(exc))


def toolchain_bin(session, toolchain_name: str) -> Path:
    """The bin folder of the toolchain's venv; a GPU toolchain skips the session on a machine without a GPU."""
    toolchain = TOOLCHAINS[toolchain_name]
    if toolchain.requires_gpu and not gpu_present():
        session.skip(f"toolchain {toolchain.name} requires a GPU and this machine has none")
    return venv_bin(session, toolchain.name, toolchain.python, toolchain.requirements())


def activated(bin_dir: Path) -> dict[str, str]:
    """The environment of a command run in the venv, as its activate script sets it (its tools first on PATH)."""
    return {"VIRTUAL_ENV": str(bin_dir.parent), "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}


def install_toolchain(session, toolchain_name: str) -> Toolchain:
    """Pinned torch + megatron-core + common pins, then the harness itself, into the session's own venv (tests)."""
    toolchain = TOOLCHAINS[toolchain_name]
    if session.python is False:
        fail(session, ExitCode.RUN_FAILED, interpreters.missing_message(toolchain.name, toolchain.python))
    session.install(*toolchain.requirements(), str(PROJECT))
    return toolchain


def ensure_test_toolchains(session) -> None:
    """Build the venv the routing test runs in (tests/inference/test_family.py), unless the selection leaves
    inference out."""
    if any("not inference" in arg for arg in session.posargs):
        return
    toolchain = routing_toolchain(PYPROJECT)
    if toolchain is not None:
        toolchain_bin(session, toolchain)


def extra_requirements(extra: str) -> list[str]:
    """The pins of one of the project's optional-dependency groups."""
    import tomllib

    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"][extra]


def install_harness(session, *extras: str) -> None:
    """The harness alone (compare, record, matrix do not need torch)."""
    session.install(str(PROJECT) + (f"[{','.join(extras)}]" if extras else ""))


# --- arguments after `nox -s NAME --` -----------------------------------------------------------


class SessionParser(argparse.ArgumentParser):
    """The words after ``nox -s NAME --``: the session's own, declared here, and the rest, ``forwarded`` as they are
    to the logitsmatch command the session runs, which validates them (so a new option of that command needs no
    change here). A bad word of the session's own fails the session with the usage line (nothing exits)."""

    def __init__(self, session):
        super().__init__(prog=f"nox -s {session.name} --", add_help=False, allow_abbrev=False)
        self.session = session

    def error(self, message):
        fail(self.session, ExitCode.BAD_INPUT, f"{message}; {' '.join(self.format_usage().split())}")

    def parse(self) -> argparse.Namespace:
        own, forwarded = self.split(self.session.posargs)
        args = self.parse_intermixed_args(own)
        args.forwarded = forwarded
        return args

    def split(self, words: list[str]) -> tuple[list[str], list[str]]:
        """(the session's words, the command's): an option the session does not declare is the command's, with the
        word after it as its value (passed on as ``--name=value``) unless that word is an option or one of the
        session's own names (a suite, a group of suites, a toolchain)."""
        declared = {option for action in self._actions for option in action.option_strings}
        names = {*SUITES, *GROUPS, *TOOLCHAINS}
        own, forwarded, index = [], [], 0
        while index < len(words):
            word = words[index]
            if not word.startswith("-") or word.split("=", 1)[0] in declared:
                own.append(word)
            elif "=" in word or index + 1 == len(words) or words[index + 1].startswith("-") \
                    or words[index + 1] in names:
                forwarded.append(word)
            else:
                index += 1
                forwarded.append(f"{word}={words[index]}")
            index += 1
        return own, forwarded

    def suites(self, names: list[str], default: list[str]) -> list[str]:
        """``names`` if every one is a suite (a group alone, ``all`` or ``family``: its suites; none: ``default``)."""
        if len(names) == 1 and names[0] in GROUPS:
            return GROUPS[names[0]]
        return [self.suite(name) for name in names] or default

    def suite(self, name: str) -> str:
        if name not in SUITES:
            self.error(f"unknown suite {name!r} (known: {', '.join(SUITES)})")
        return name

    def toolchain(self, name: str) -> str:
        try:
            return check_toolchain(name, TOOLCHAINS)
        except BadInput as exc:
            self.error(str(exc))


def logitsmatch_parser(session) -> SessionParser:
    """``[SUITE ... | all | family] [options of logitsmatch run]``."""
    parser = SessionParser(session)
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    return parser


def record_parser(session) -> SessionParser:
    """``TOOLCHAIN [SUITE ...] [--from DIR] [options of logitsmatch record]``."""
    parser = SessionParser(session)
    parser.add_argument("toolchain", metavar="TOOLCHAIN")
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    parser.add_argument("--from", dest="from_dir", metavar="DIR")
    return parser


def matrix_parser(session) -> SessionParser:
    """``[--tag TAG ...] [SUITE ... | all] [--baseline T] [--source auto|results|goldens|DIR] [options of logitsmatch
    matrix]``: the session chooses the toolchains and suites, and runs what has no fresh result unless the source
    is the goldens or a collected tree."""
    parser = SessionParser(session)
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--baseline", metavar="T")
    parser.add_argument("--source", default="auto", metavar="auto|results|goldens|DIR")
    return parser


def invariance_parser(session) -> SessionParser:
    """``SUITE [--toolchain T] [--megatron-core SPEC] [--torch SPEC] [options of logitsmatch invariance]``."""
    parser = SessionParser(session)
    parser.add_argument("suite", metavar="SUITE")
    add_toolchain_option(parser, None, default=DEFAULT_TOOLCHAIN, metavar="T")
    parser.add_argument("--megatron-core", metavar="SPEC")
    parser.add_argument("--torch", metavar="SPEC")
    return parser


def prerelease_parser(session) -> SessionParser:
    """``--megatron-core SPEC [--torch SPEC] [--baseline TOOLCHAIN] [--python X.Y] [SUITE ...] [options of logitsmatch
    run]``."""
    parser = SessionParser(session)
    parser.add_argument("--megatron-core", metavar="SPEC")
    parser.add_argument("--torch", metavar="SPEC")
    parser.add_argument("--baseline", default=DEFAULT_TOOLCHAIN, metavar="TOOLCHAIN")
    parser.add_argument("--python", metavar="X.Y")
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    return parser


def explain_parser(session) -> SessionParser:
    """``--baseline T (--candidate T | --megatron-core SPEC | --torch SPEC | --pin N==V ...) [SUITE ...]``
    and the options of ``logitsmatch explain``."""
    parser = SessionParser(session)
    parser.add_argument("--baseline", required=True, metavar="TOOLCHAIN")
    parser.add_argument("--candidate", metavar="TOOLCHAIN")
    parser.add_argument("--megatron-core", metavar="SPEC")
    parser.add_argument("--torch", metavar="SPEC")
    parser.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION")
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    return parser


# --- the sessions -------------------------------------------------------------------------------


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
    """Run each suite in the toolchain's venv; report every failure, fail the session at the end if any failed.

    A suite the toolchain's release cannot run (``logitsmatch run`` exits 4, naming what the release
    lacks, before running anything) is listed as not run and does not fail the session: it has no
    golden for that toolchain. A suite without a golden (exit 5) is NO GOLDEN, listed apart from drift
    with the record command that makes its golden; every other failure is named by its exit code. The
    decision is the run's own, made in the toolchain venv, so nox's interpreter needs nothing beyond
    the standard library.
    """
    from nox.command import CommandFailed

    from logitsmatch.errors import EXIT_UNSUPPORTED, outcome_name

    parser = logitsmatch_parser(session)
    args = parser.parse()
    suites = parser.suites(args.suites, DEFAULT_SUITES)
    bin_dir = toolchain_bin(session, toolchain_name)
    outcomes: dict[str, list[str]] = {}
    ended: dict[str, tuple[int | None, float]] = {}
    for suite in suites:
        started = time.monotonic()
        code: int | None = 0
        try:
            session.run(str(bin_dir / "logitsmatch"), "run", suite, "--toolchain", toolchain_name,
                        *quiet_unless_told(args.forwarded), external=True, env=activated(bin_dir))
        except CommandFailed as exc:  # keep running the other suites
            code = exc.return_code
            outcomes.setdefault(outcome_name(code), []).append(suite)
            if code != EXIT_UNSUPPORTED:
                carry(session, code)
        ended[suite] = (code, time.monotonic() - started)
    for line in session_summary(toolchain_name, ended):
        session.log(line)
    not_run = outcomes.pop(outcome_name(EXIT_UNSUPPORTED), [])
    if not_run:
        session.log(f"{toolchain_name}: not run, its megatron-core release cannot (see above): {', '.join(not_run)}")
    outcomes_summary(session, toolchain_name, outcomes, record_with=toolchain_name)


def quiet_unless_told(forwarded: list[str]) -> list[str]:
    """The run's options, with ``-q`` unless the user chose a verbosity: a session prints each suite's verdict
    line and, once at its end, the summary and the hardware-class note (``-- -v`` or ``-- --verbose`` for each
    run's whole report, as ``logitsmatch run`` prints it by default)."""
    verbosity = {"-q", "--quiet", "-v", "--verbose"}
    return forwarded if verbosity & set(forwarded) else ["-q", *forwarded]


def ensure_fresh_results(session, toolchain_name: str, suites: list[str]) -> list[str]:
    """Run, in the toolchain's venv, the suites without a fresh CPU result (run.freshness); return the suites its
    release can run (the others are logged with the reason). The venv is built only if something must run."""
    from logitsmatch.run.freshness import ensure_fresh
    from logitsmatch.run.platforms import get_platform

    toolchain, cpu = TOOLCHAINS[toolchain_name], get_platform("cpu")
    interpreter = functools.cache(lambda: str(toolchain_bin(session, toolchain_name) / "python"))
    suites = runnable_suites(session, toolchain_name, suites)
    problems = [f"{name}: {problem}" for name in suites
                if (problem := ensure_fresh(interpreter, PROJECT, load_suite(PROJECT, name), toolchain, cpu)[1])]
    if problems:  # a run that should have made the result did not
        fail(session, ExitCode.RUN_FAILED, f"{toolchain_name}: {'; '.join(problems)}")
    return suites


def run_record(session) -> None:
    """Make a toolchain's fresh result (run first where there is none) the golden of each suite its release can run."""
    parser = record_parser(session)
    args = parser.parse()
    toolchain = parser.toolchain(args.toolchain)
    if args.from_dir:  # collected results (logitsmatch collect): nothing runs; the suites the tree holds for it
        collected = Path(args.from_dir)
        held = [name for name in SUITES if any((collected / name).glob(f"*/{toolchain}/*/result.json"))]
        suites, forwarded = parser.suites(args.suites, held), [f"--from={collected}", *args.forwarded]
        if not suites:
            parser.error(f"{collected} holds no collected result of {toolchain}")
    else:
        suites, forwarded = ensure_fresh_results(session, toolchain, parser.suites(args.suites, SUITES)), args.forwarded
    install_harness(session)
    for suite in suites:
        run_command(session, "logitsmatch", "record", suite, "--toolchain", toolchain, *forwarded)


def run_matrix(session) -> None:
    """The toolchains with any of the tags (default: all this machine can run) over the suites (default: the
    default suites); what has no fresh result runs first, unless ``--source goldens`` tabulates the goldens alone."""
    parser = matrix_parser(session)
    args = parser.parse()
    suites = parser.suites(args.suites, DEFAULT_SUITES)
    toolchains = [name for name in runnable_toolchains() if not args.tag or set(args.tag) & set(TOOLCHAINS[name].tags)]
    if not toolchains:
        parser.error(f"no toolchain has the tag {' or '.join(map(repr, args.tag))}")
    if args.baseline and args.baseline not in toolchains:
        parser.error(f"baseline {args.baseline!r} is not among the selected toolchains ({', '.join(toolchains)})")
    install_harness(session, "plot")
    if args.source in ("auto", "results"):  # goldens, or a collected tree (logitsmatch collect): nothing runs
        for toolchain in toolchains:
            ensure_fresh_results(session, toolchain, suites)
    options = [f"--{key}={value}" for key, value in (("baseline", args.baseline), ("source", args.source)) if value]
    run_command(session, "logitsmatch", "matrix", *(f"--toolchain={name}" for name in toolchains),
                *(f"--suite={name}" for name in suites), *options, *args.forwarded)


def run_invariance(session) -> None:
    """``logitsmatch invariance`` in the toolchain's venv: it runs the layouts without a fresh result, then
    tabulates them."""
    parser = invariance_parser(session)
    args = parser.parse()
    suite = parser.suite(args.suite)
    toolchain = parser.toolchain(args.toolchain)
    candidate = []
    if args.megatron_core or args.torch:  # a candidate derived from the toolchain, as prerelease derives it
        name, bin_dir = candidate_venv(session, TOOLCHAINS[toolchain], args.megatron_core, args.torch)
        candidate = ["--candidate", name]
    else:
        bin_dir = toolchain_bin(session, toolchain)
    run_command(session, str(bin_dir / "logitsmatch"), "invariance", suite, "--toolchain", toolchain, *candidate,
                *args.forwarded, external=True, env=activated(bin_dir))


def candidate_venv(session, baseline, megatron_core: str | None, torch: str | None,
                   python: str | None = None) -> tuple[str, Path]:
    """(name, bin folder) of the candidate derived from ``baseline`` with these pins swapped (devtools.prerelease),
    on ``python`` or the oldest interpreter its packages accept."""
    from logitsmatch.devtools import prerelease

    overrides = [prerelease.Override(package, spec) for package, spec in
                 (("megatron-core", megatron_core), ("torch", torch)) if spec]
    try:
        needed = [spec for o in overrides if (spec := prerelease.requires_python(o, sys.executable))]
        python = python or prerelease.candidate_python(baseline, needed)
    except BadInput as exc:
        fail(session, ExitCode.RUN_FAILED, str(exc))
    if python != baseline.python:
        session.warn(f"the candidate needs a newer Python than the baseline: Requires-Python {', '.join(needed)}; "
                     f"baseline {baseline.name} uses {baseline.python}, the candidate runs on {python}")
    candidate = prerelease.derive(baseline, overrides, python)
    session.log(f"candidate {candidate.name}: {' '.join(candidate.requirements)}")
    return candidate.name, venv_bin(session, candidate.name, python, list(candidate.requirements))


def run_prerelease(session) -> None:
    """Derive a candidate from a baseline toolchain, run the suites in it, judge them against the baseline."""
    from nox.command import CommandFailed

    from logitsmatch.errors import outcome_name

    parser = prerelease_parser(session)
    args = parser.parse()
    baseline = TOOLCHAINS[parser.toolchain(args.baseline)]
    suites = parser.suites(args.suites, SUITES)
    if not (args.megatron_core or args.torch):
        parser.error("nothing to validate: give --megatron-core SPEC and/or --torch SPEC")
    candidate, bin_dir = candidate_venv(session, baseline, args.megatron_core, args.torch, args.python)
    outcomes: dict[str, list[str]] = {}
    for suite in suites:
        try:
            session.run(str(bin_dir / "logitsmatch"), "run", suite, "--toolchain", baseline.name,
                        "--candidate", candidate, *args.forwarded, external=True, env=activated(bin_dir))
        except CommandFailed as exc:
            outcomes.setdefault(outcome_name(exc.return_code), []).append(suite)
            carry(session, exc.return_code)
        reports = paths.result_dir(suite, "cpu", candidate)
        session.log(f"{suite}: reports in {reports} (report.md, report.junit.xml, report.json)")
    outcomes_summary(session, f"candidate {candidate} against {baseline.name}", outcomes, record_with=baseline.name)


def run_explain(session) -> None:
    """``logitsmatch explain`` on the baseline toolchain's venv and the candidate's (a toolchain's, or one derived
    from the baseline: a venv of its own; a GITDIR@REF candidate needs none)."""
    from logitsmatch.devtools import explain_sides

    parser = explain_parser(session)
    args = parser.parse()
    try:
        request = explain_sides.request_of(args)
    except BadInput as exc:
        parser.error(str(exc))
    parser.suites(request.suites, [])
    baseline = TOOLCHAINS[parser.toolchain(request.baseline)]
    base_python = str(toolchain_bin(session, baseline.name) / "python")
    command = [base_python, "-m", "logitsmatch", "explain", *request.suites, "--baseline-python", base_python,
               "--toolchain", baseline.name, *request.passed_on]
    if request.candidate:
        command += ["--candidate-python", str(toolchain_bin(session, parser.toolchain(request.candidate)) / "python")]
    elif request.overrides or request.pins:
        name, requirements = explain_sides.candidate_requirements(baseline, request, baseline.python)
        command += ["--candidate-python", str(venv_bin(session, name, baseline.python, requirements) / "python")]
    if request.commit:
        package, spec = request.commit
        command += ["--candidate-commit", f"{package}={spec}"]
    run_command(session, *command, external=True)


def run_watch(session) -> None:
    """``logitsmatch watch`` in the toolchain's venv (each commit's tree is installed over it); the session's words
    but the toolchain and the suites are the command's."""
    parser = SessionParser(session)
    parser.add_argument("--toolchain", default=DEFAULT_TOOLCHAIN, metavar="TOOLCHAIN")
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    args = parser.parse()
    toolchain = parser.toolchain(args.toolchain)
    python = str(toolchain_bin(session, toolchain) / "python")
    run_command(session, python, "-m", "logitsmatch", "watch", *parser.suites(args.suites, []),
                "--toolchain", toolchain, "--python", python, *args.forwarded, external=True)


def run_fanout(session) -> None:
    """The fan-out runs in this session's venv (the harness and submitit; devtools.fanout parses the arguments):
    submitit starts every job with its Python."""
    install_harness(session, "fanout", "plot")
    run_command(session, "python", "-m", "logitsmatch.devtools.fanout", *session.posargs)
