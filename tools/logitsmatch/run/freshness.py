"""Run what has no fresh result: the one place that decides a result no longer stands and makes it again.

``logitsmatch invariance`` (one suite at several layouts, in its own venv) and the nox sessions that
tabulate or record results (``matrix``, ``record``: in each toolchain's venv) call ``ensure_fresh``;
what "fresh" means is ``provenance.freshness_problem``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_UNSUPPORTED
from logitsmatch.log import logger
from logitsmatch.provenance import freshness_problem, read_sidecar
from logitsmatch.run.plan import expected_weights


def ensure_fresh(python: Callable[[], str], project: Path, suite, toolchain, platform, *, timeout: float | None = None,
                 rerun: bool = False, may_run: bool = True, batch_invariant: bool = False,
                 candidate: str | None = None) -> tuple[Path, str | None]:
    """The result of ``suite`` on ``toolchain`` and ``platform`` (its layout override included), and None when it
    stands for them as they are now, else why not.

    A result that is not fresh (or every result, with ``rerun``) is made by ``python -m logitsmatch run
    ... --no-compare``, unless ``may_run`` is False. ``python()`` gives an interpreter of the toolchain's venv; it is
    asked for only when something must run (nox builds the venv then).
    """
    result = paths.result_path(
        suite.name, platform.label(suite.model_args, suite.world_size), candidate or toolchain.name
    )
    problem = None if rerun else (candidate_problem(result, suite, project, toolchain, candidate) if candidate
                                  else freshness_problem(result, suite, expected_weights(suite, project), toolchain))
    if not (rerun or problem):
        return result, None
    if not may_run:
        return result, f"no fresh result ({problem}): {result}"
    command = ["logitsmatch", "run", suite.name, "--toolchain", toolchain.name, "--platform", platform.profile]
    if platform.layout_override is not None:
        command += ["--layout", platform.layout_override.name]
    if candidate:
        command += ["--candidate", candidate]
    if platform.schedule != "together":
        command += ["--schedule", platform.schedule]
    if batch_invariant:
        command.append("--batch-invariant")
    if timeout:
        command += ["--timeout", str(timeout)]
    command.append("--no-compare")
    logger.info(f"{suite.name} ({platform.label(suite.model_args, suite.world_size)}, {toolchain.name}): "
                f"{problem or 'run again (--rerun)'}; {' '.join(command)}")
    sys.stdout.flush()
    # the interpreter's folder first on PATH, as in its activated venv (tools it installs, e.g. ninja, are found)
    interpreter = python()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(interpreter).parent), os.environ.get("PATH", "")])}
    code = subprocess.run([interpreter, "-m", *command], env=env).returncode
    if code == EXIT_UNSUPPORTED:
        return result, f"{NOT_SUPPORTED} (logitsmatch run exited {code})"
    return (result, None) if code == 0 else (result, f"logitsmatch run exited {code}")


NOT_SUPPORTED = "not supported by this toolchain's megatron-core"  # what a problem starts with for exit 4


def candidate_problem(result: Path, suite, project: Path, toolchain, candidate: str) -> str | None:
    """Why a candidate's result (``run --candidate``: labelled with the candidate's name, which its pins spell) does
    not stand for it, or None."""
    problem = freshness_problem(result, suite, expected_weights(suite, project))
    if problem:
        return problem
    record = read_sidecar(paths.provenance_path(result))
    if (record.get("toolchain"), record.get("candidate_of")) != (candidate, toolchain.name):
        return (f"its provenance names {record.get('toolchain')} of {record.get('candidate_of')}, "
                f"not {candidate} of {toolchain.name}")
    return None
