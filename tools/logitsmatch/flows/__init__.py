"""Orchestration: what a subcommand does, as a pipeline of small task functions the CLI starts.

Modelled on nox's own ``tasks.py`` and ``workflow.py``: a flow is a sequence of documented task
functions run in order, each given what the previous one returned and the parsed arguments; a task
that returns an int (an exit code of ``logitsmatch.errors``) ends the flow with it, so the last
task always does. ``logitsmatch.cli`` declares the options and calls a flow; the flows put the
judge, run and explain layers together (rank code only inside functions, through ``rank``'s
contracts) and import nothing of the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Task = Callable[[Any, Any], Any]


def execute(workflow: Sequence[Task], args, start: Any = None) -> int:
    """Run ``workflow``'s tasks in order from ``start`` until one returns an exit code."""
    value = start
    for task in workflow:
        value = task(value, args)
        if isinstance(value, int):
            return value
    raise TypeError(f"flow ended without an exit code: {workflow[-1].__name__} returned {value!r}")
