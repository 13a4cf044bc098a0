"""Processes of a run end with their parent: no orphan survives a SIGKILLed harness.

Each hop of the process tree (nox or a shell -> ``logitsmatch run`` -> the run's
zygote -> ranks -> rank 0's ZMQ coordinator, and the synthetic-weights writer)
asks the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``), so
killing any process of the chain, even with SIGKILL, ends everything below it:
``logitsmatch run`` gets SIGTERM and stops its children first.
"""

from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Get ``sig`` when the parent process dies; if it already died (re-parented), send it now.

    ``expected_parent`` is the pid the caller's parent should have; without it
    a parent already gone cannot be detected, only a later death.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
