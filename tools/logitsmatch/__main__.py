"""``python -m logitsmatch``: the CLI, with Ctrl-C or SIGTERM during its imports ending quietly (130).

Until ``cli.entry`` installs the same handling, a signal ends the process at once with one line: nothing
has been written yet, so there is nothing to clean up, and no traceback is useful.
"""

import os
import signal
import sys


def _stopped_while_starting(signum, frame) -> None:
    os.write(2, b"logitsmatch: interrupted\n")
    os._exit(130)


for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, _stopped_while_starting)

from logitsmatch.cli import entry  # noqa: E402 - after the handlers, so that its imports are covered

sys.exit(entry())
