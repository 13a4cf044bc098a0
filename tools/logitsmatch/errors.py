"""Error types that map to the documented exit codes.

Every user-facing failure is one of these; the CLI turns it into one line on
stderr and the matching exit code, never a traceback.
"""

EXIT_OK = 0
EXIT_DRIFT = 1  # numerics or tokens differ beyond policy / golden missing
EXIT_BAD_INPUT = 2  # malformed file, unknown name, bad flag, missing path
EXIT_RUN_FAILED = 3  # a rank died or hung, deadline passed, coordinator failed
EXIT_UNSUPPORTED = 4  # this toolchain's megatron-core release cannot run the suite's layout
EXIT_INTERRUPTED = 130  # Ctrl-C


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
