"""Step 5 of an explanation, which module: ``judge.localize`` on the captures of the two boundary runs."""

from __future__ import annotations

from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.explain.suite_runs import Run, SuiteRuns


def first_moving_module(good: Path, bad: Path) -> dict:
    """The first module that moves between the runs whose results are ``good`` and ``bad``: aligned step by step,
    or, where their steps hold different tokens (another data-parallel engine served a request, or another batch
    schedule), row by row by prefix, each request's rows on the engine that served it in each run.
    ``{"localization": ..., "first_module": ... or None}``, and under "result" the localization itself (for the
    plot) when the captures allowed one."""
    from logitsmatch.judge.localize import localize, read_capture
    from logitsmatch.judge.localize_prefix import localize_by_prefix

    try:
        captures = read_capture(paths.capture_dir(good)), read_capture(paths.capture_dir(bad))
        result = localize(*captures)
    except BadInput as exc:
        return {"localization": {"problem": str(exc)}, "first_module": None, "result": None}
    steps_problem, aligned_by = result.schedule_problem, "steps"
    if steps_problem:
        try:
            result, aligned_by = localize_by_prefix(*captures), "prefixes"
        except BadInput as exc:
            steps_problem += f"; not aligned by prefix either: {exc}"
    first = result.first_bitwise
    module = None
    if first is not None:
        module = {
            "name": first.name,
            "output": first.output,
            "step": first.step,
            "step_kind": "prefill" if first.step == 0 else f"decode {first.step}",
            "max_abs_delta": first.to_dict()["max_abs_delta"],
            "weights_differing_in_it": [n for n in result.weights_differing if n.startswith(first.name + ".")],
            "aligned_by": aligned_by,
            "rows": first.rows_note,
        }
    localization = {**result.to_dict(), "aligned_by": aligned_by, "steps_problem": steps_problem}
    return {"localization": localization, "first_module": module, "result": result}


class FirstModule(SuiteRuns):
    """The first module that moves between the last good and the first bad run; the result stays for the plot."""

    last_localization = None  # step 5's result, for the plot (--png)

    def localization(self, good: Run, bad: Run) -> dict:
        """``first_moving_module`` of the boundary runs."""
        found = first_moving_module(good.result, bad.result)
        result = found.pop("result")
        if result is not None:
            self.last_localization = result
        return found
