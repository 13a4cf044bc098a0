"""logitsmatch sessions. Each is a thin wrapper over logitsmatch.devtools.nox_support; every toolchain runs in
its own venv, .nox/toolchains/<toolchain> (built on first use, rebuilt when its pins change).

    nox                                 the default suites on the default toolchain (its logitsmatch session)
    nox -l                              list toolchains and sessions
    nox -s logitsmatch -t default       the same, by tag: the seed and the fast sibling of every case on the
                                        default CPU toolchain (default-suites in pyproject.toml)
    nox -s logitsmatch -t default -- family
                                        every case of Megatron-LM's inference family that runs here, each with
                                        its tiny sibling (docs/family/README.md; -t newest for 0.17+ features)
    nox -s logitsmatch                  every toolchain
    nox -s tests                        the test suite (what CI runs)
    nox -s tests -- -m "not inference"  the fast selection: no megatron-core runs
    nox -s lint                         ruff
    nox -s invariance -- SUITE          one suite at several parallel layouts (N x N table)
    nox -s explain -- --baseline T ...  why two environments drift (package, commit, module)
    nox -s watch -- --source megatron-core=GITDIR --range A..B --out DIR
                                        which commits of a range move which suite, each change proven
"""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from logitsmatch.devtools import nox_support as support  # noqa: E402

nox.options.sessions = [f"logitsmatch({support.DEFAULT_TOOLCHAIN})"]  # a bare `nox`: one toolchain, not all
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=False)
@nox.parametrize("toolchain", support.toolchain_params(nox))
def logitsmatch(session, toolchain):
    """Run the suites in one pinned toolchain and judge them (after --: suite names or `all`; default the default)."""
    support.run_suites(session, toolchain)


@nox.session(python=support.default_interpreter())
def tests(session):
    """The test suite, in the default toolchain's venv (it runs real TP8 inference)."""
    support.install_toolchain(session, support.DEFAULT_TOOLCHAIN)
    support.install_harness(session, "plot", "test")
    support.ensure_test_toolchains(session)  # the routing test runs in the newest toolchain that records routing
    session.run("pytest", *session.posargs)


@nox.session
def lint(session):
    """ruff, as configured in pyproject.toml, at the version its `lint` extra pins."""
    session.install(*support.extra_requirements("lint"))
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def compare(session):
    """Which logprobs and tokens moved between two toolchains or files (the CLI's compare-toolchains).

    nox -s compare -- A B [--suite SUITE ...] [--source auto|results|goldens] [--out DIR]
    """
    support.install_harness(session)
    support.run_command(session, "logitsmatch", "compare-toolchains", *session.posargs)


@nox.session
def record(session):
    """Make a toolchain's fresh results its goldens, running what has none.

    nox -s record -- TOOLCHAIN [SUITE ...] [--force]
    """
    support.run_record(session)


@nox.session
def matrix(session):
    """N x N drift table of toolchains per suite, running what has no fresh result.

    nox -s matrix -- [--tag TAG] [SUITE ...] [--baseline T] [--source goldens] [--out DIR]
    """
    support.run_matrix(session)


@nox.session(python=False)
def invariance(session):
    """One suite at several parallel layouts or request schedules as an N x N table, running what has no fresh result.

    nox -s invariance -- SUITE [--layouts tp8,pp8,tp2pp2dp2,dp8,tp1] [--schedules together,alone,...]
        [--batch-invariant]
    [--toolchain T | --megatron-core SPEC --torch SPEC (a candidate derived from T)] [--out DIR] [--rerun]
    """
    support.run_invariance(session)


@nox.session(python=False)
def prerelease(session):
    """Validate a release candidate against a baseline's goldens.

    nox -s prerelease -- --megatron-core SPEC [--torch SPEC] [--baseline TOOLCHAIN] [SUITE ...]
    (SPEC: a registry version, a local wheel or a local source directory)."""
    support.run_prerelease(session)


@nox.session(python=False)
def explain(session):
    """Why two environments drift: the harness inputs, the packages, the commit, the first moving module.

    nox -s explain -- --baseline TOOLCHAIN
        (--candidate TOOLCHAIN | --megatron-core SPEC | --torch SPEC | --pin N==V ...) [SUITE ...]
        [--source PACKAGE=GITDIR] [--json PATH] [--markdown PATH] [--mode deterministic|megatron|approximate]
    (SPEC: a registry version, a local wheel, a local source directory or GITDIR@REF)."""
    support.run_explain(session)


@nox.session(python=False)
def watch(session):
    """Which commits of megatron-core move which suite, each change proven; upstream findings followed.

    nox -s watch -- --source megatron-core=GITDIR --range A..B --out DIR [--toolchain T] [SUITE ...]
        [--every N] [--executor local|slurm] [--budget RUNS] [--plan]"""
    support.run_watch(session)


@nox.session
def fanout(session):
    """One job per (toolchain, suite) on Slurm or here (submitit), then collect and the drift matrix.

    nox -s fanout -- [--tag TAG | --toolchain T ...] [SUITE ...] --executor slurm|local [--partition P]
    [--results DIR] [--slurm-option KEY=VALUE ...]; each toolchain's venv is built once, by a build job its suite
    jobs depend on."""
    support.run_fanout(session)
