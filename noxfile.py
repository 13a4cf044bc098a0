"""logitsmatch sessions. Each is a thin wrapper over logitsmatch.nox_support.

    nox -l                          list toolchains and sessions
    nox -s logitsmatch -t default   the TP8 ZMQ suites on the default CPU toolchain
    nox -s logitsmatch              every toolchain
    nox -s tests                    the test suite
"""

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from logitsmatch import nox_support as support  # noqa: E402

nox.options.sessions = ["logitsmatch"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
@nox.parametrize("python,toolchain", support.toolchain_params(nox))
def logitsmatch(session, toolchain):
    """Run the suites (all, or those named after --) in one pinned toolchain and judge them."""
    support.install_toolchain(session, toolchain)
    support.run_suites(session, toolchain)


@nox.session(python=support.default_interpreter())
def tests(session):
    """The test suite, in the default toolchain's venv (it runs real TP8 inference)."""
    support.install_toolchain(session, support.DEFAULT_TOOLCHAIN)
    session.install("pytest", "hypothesis")
    session.run("pytest", *session.posargs)
