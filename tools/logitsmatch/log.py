"""The harness's own messages: one ``logging`` handler that prints ``[logitsmatch] ...`` lines.

Reports (the verdict, tables, the matrix) are a command's output and go to
stdout directly; everything else — progress, decisions, warnings — goes
through ``logger`` so ``-q`` / ``-v`` can quiet it or say more.
"""

from __future__ import annotations

import logging
import re
import sys

logger = logging.getLogger("logitsmatch")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "[logitsmatch] "
        if record.levelno >= logging.ERROR:
            prefix += "error: "
        elif record.levelno >= logging.WARNING:
            prefix += "warning: "
        return prefix + record.getMessage()


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is now (so redirection and capture see the lines)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbosity: int = 0) -> None:
    """Install the handler once: -1 quiet (warnings only), 0 normal, 1 verbose (debug)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(_Format())
        logger.addHandler(handler)


def quiet() -> bool:
    """-q: reports shrink to their verdict line."""
    return logger.getEffectiveLevel() > logging.INFO


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def visible(text: str) -> str:
    """``text`` safe for a terminal: a control character (an escape sequence in a request id, a bell) is shown as
    its ``\\xNN`` escape instead of acting on the terminal, a lone surrogate as U+FFFD; newlines and tabs stay."""
    text = _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)
    return _SURROGATES.sub("\ufffd", text)


configure()  # library use (tests, scripts) prints like the CLI does; the CLI reconfigures for -q/-v
