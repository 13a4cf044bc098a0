"""What stands between a subcommand and its process: SIGTERM, a report that cannot be printed, an internal error.

Each keeps the exit-code contract: SIGTERM ends a command as Ctrl-C does (130, the writers' temp files
removed); a closed pipe or a full disk under the report leaves the verdict's code; an unexpected exception
is one line naming a crash log (70), never drift.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import traceback
from pathlib import Path


def crash_log_dir() -> Path:
    """Where internal errors leave their traceback: $XDG_STATE_HOME/logitsmatch (default ~/.local/state)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "logitsmatch"


def report_internal_error(command: str, argv: list[str], verbose: bool) -> None:
    """One stderr line naming the log file that holds the traceback (the traceback itself only with -v)."""
    trace = traceback.format_exc()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = crash_log_dir() / f"crash-{stamp}-{os.getpid()}.log"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(f"logitsmatch {' '.join(argv)}\n\n{trace}", errors="backslashreplace")
        where = f"traceback in {log_path}"
    except OSError as exc:
        where = f"no log written ({exc.strerror or exc}); rerun with -v for the traceback"
    if verbose:
        sys.stderr.write(trace)
    last = trace.strip().splitlines()[-1] if trace.strip() else "unknown error"
    print(f"logitsmatch {command}: internal error (a bug, not drift): {last[:200]}; {where}", file=sys.stderr)


def stop_while_starting(signum, frame) -> None:
    """Ctrl-C or SIGTERM before a command started: one line and 130 at once (nothing written yet)."""
    os.write(2, b"logitsmatch: interrupted\n")
    os._exit(130)


def stop_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command as Ctrl-C does: the writers' cleanup runs, exit 130


class ReportStream:
    """stdout that a closed pipe or a full disk cannot turn into a crash: the verdict's exit code stands.

    The first failed write is remembered and said once on stderr; later writes are dropped.
    """

    def __init__(self, stream):
        self.stream, self.failure = stream, None

    def write(self, text: str) -> int:
        if self.failure is None:
            try:
                return self.stream.write(text)
            except OSError as exc:
                self.failure = exc
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self.stream.flush()
            except OSError as exc:
                self.failure = exc

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def close_quietly(self) -> None:
        """Flush; after a failure, point fd 1 at /dev/null so that the interpreter's own exit flush is silent."""
        self.flush()
        if self.failure is not None:
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            reason = self.failure.strerror or self.failure.__class__.__name__
            with contextlib.suppress(OSError):
                print(f"logitsmatch: the report could not be printed ({reason}); the exit code is the verdict's",
                      file=sys.stderr)
