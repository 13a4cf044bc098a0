"""The exit codes every command returns (a contract: CI tells a crash from drift) and the errors that carry them.

Every user-facing failure is one of these errors; the CLI turns it into one
line on stderr and its exit code, never a traceback. Anything else escaping a
command is an internal error (``EXIT_INTERNAL``): its traceback goes to a log
file, never to the drift code.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """One code per outcome; README's table and ``logitsmatch --help`` are rendered from ``EXIT_CODE_TABLE``."""

    OK = 0
    DRIFT = 1
    BAD_INPUT = 2
    RUN_FAILED = 3
    UNSUPPORTED = 4
    NO_GOLDEN = 5
    INTERNAL = 70  # sysexits.h EX_SOFTWARE
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


EXIT_CODE_TABLE = {
    ExitCode.OK: "pass: matches the golden within policy (determinism: the runs are bit-identical)",
    ExitCode.DRIFT: "drift: tokens or logprobs differ beyond the policy (NaN/inf included), or NOT DETERMINISTIC",
    ExitCode.BAD_INPUT: "bad input or usage: a malformed, special or oversized file, wrong types, nothing to check, "
                        "an unknown name, an output over an input, a bad option",
    ExitCode.RUN_FAILED: "the run failed: a rank, the coordinator or the launcher died, or the deadline passed",
    ExitCode.UNSUPPORTED: "not run: this toolchain's megatron-core release cannot run the suite's layout",
    ExitCode.NO_GOLDEN: "NO GOLDEN: the run finished but there is no golden to judge it against (it names the "
                        "nox -s record command that makes one)",
    ExitCode.INTERNAL: "internal error: a bug in logitsmatch; one line names the log file with the traceback",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C or SIGTERM)",
}

OUTCOME_NAMES = {
    ExitCode.OK: "pass", ExitCode.DRIFT: "drift", ExitCode.BAD_INPUT: "bad input", ExitCode.RUN_FAILED: "run failed",
    ExitCode.UNSUPPORTED: "not run", ExitCode.NO_GOLDEN: "NO GOLDEN", ExitCode.INTERNAL: "internal error",
    ExitCode.INTERRUPTED: "interrupted",
}


def outcome_name(code: int | None) -> str:
    """What an exit code of a logitsmatch command means, in a word or two (nox sessions' summaries)."""
    return OUTCOME_NAMES.get(code, f"exit {code}") if code is not None else "did not start"


EXIT_OK = ExitCode.OK
EXIT_DRIFT = ExitCode.DRIFT
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
EXIT_RUN_FAILED = ExitCode.RUN_FAILED
EXIT_UNSUPPORTED = ExitCode.UNSUPPORTED
EXIT_NO_GOLDEN = ExitCode.NO_GOLDEN
EXIT_INTERNAL = ExitCode.INTERNAL
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


def exit_code_help() -> str:
    """The exit-code table as plain text (the epilog of ``logitsmatch --help``)."""
    return "exit codes:\n" + "\n".join(f"  {int(code):>3}  {text}" for code, text in EXIT_CODE_TABLE.items())


def exit_code_line() -> str:
    """The exit codes in one line, for a subcommand's help (the table with what each means: ``--help``)."""
    return ("exit codes: " + ", ".join(f"{int(code)} {name}" for code, name in OUTCOME_NAMES.items())
            + " (logitsmatch --help says what each means)")


class LogitsmatchError(Exception):
    """Base class: carries the exit code the CLI should return."""

    exit_code = EXIT_BAD_INPUT


class BadInput(LogitsmatchError):
    """Input the user gave us is malformed, unknown or inconsistent."""

    exit_code = EXIT_BAD_INPUT


class RunFailed(LogitsmatchError):
    """The inference run itself failed (rank death, hang, deadline)."""

    exit_code = EXIT_RUN_FAILED


class Unsupported(LogitsmatchError):
    """The toolchain's megatron-core release cannot run what the suite asks for (nothing was run)."""

    exit_code = EXIT_UNSUPPORTED
