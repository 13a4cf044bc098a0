"""Schedule invariance on planted causes, end to end (real runs of the tiny suite at TP1, one rank each, to stay cheap).

Each cause is an overlay of this venv's megatron-core built here (tests/support/planted.py's package_overlay), put
in front of sys.path for the runs:

* a step whose logits depend on the number of active requests: ``alone`` vs ``together`` is NOT INVARIANT and the
  report names that pair;
* a change on the KV-cache decode path only (flash_attn_with_kvcache's output scaled): the engine's schedules agree
  with each other, the training forward (no KV cache) does not.

Without a plant, the tiny suite's table over every schedule is produced and judged.
"""

from __future__ import annotations

import json
import os

from logitsmatch import schedules
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, planted, run_logitsmatch

CONTROLLER = "megatron/core/inference/text_generation_controllers/text_generation_controller.py"
FORWARD_LOGITS = "        logits = self._dynamic_step_forward_logits(input_ids, position_ids)\n"
# 1e-3 more per request beside this one: a batch of four moves every logit by 0.3 %
PLANTED_BATCH_DEPENDENCE = (
    FORWARD_LOGITS,
    FORWARD_LOGITS + "        logits = logits * (1.0 + 1e-3 * (active_request_count - 1))\n",
)
ATTENTION = "megatron/core/transformer/attention.py"
DECODE_KERNEL = "output_total = flash_attn_with_kvcache(**flash_attn_args)"
PLANTED_DECODE_CHANGE = (DECODE_KERNEL, DECODE_KERNEL + " * (1.0 + 1e-3)")


def invariance(tmp_path, schedule_names: str, overlay=None):
    """``logitsmatch invariance`` over the schedules at TP1 (with ``overlay`` first on sys.path); its JSON report."""
    pythonpath = os.pathsep.join(str(part) for part in (overlay, os.environ.get("PYTHONPATH")) if part)
    out = tmp_path / "out"
    completed = run_logitsmatch("invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp1",
                                "--schedules", schedule_names, "--out", str(out), timeout=1800,
                                env={"PYTHONPATH": pythonpath, "LOGITSMATCH_RESULTS": str(tmp_path / "results")})
    assert completed.returncode in (0, 1), completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed, json.loads((out / "invariance.json").read_text())


def test_a_step_that_depends_on_the_batch_makes_alone_differ_from_together(tmp_path):
    overlay = planted.package_overlay("megatron-core", "batchdependent", tmp_path / "overlay",
                                      {CONTROLLER: PLANTED_BATCH_DEPENDENCE})
    completed, report = invariance(tmp_path, "together,alone", overlay)
    cells = report["table"]["cells"]
    assert completed.returncode == 1 and "NOT INVARIANT" in completed.stdout
    assert "alone->together" in completed.stdout and "together->alone" in completed.stdout
    assert not cells["alone"]["together"]["passed"] and cells["alone"]["together"]["max_abs_delta"] > 1e-4
    provenance = json.loads((tmp_path / "results" / TINY_SUITE / "cpu-tp1-sched-alone-fp32" / DEFAULT_TOOLCHAIN
                             / "result.provenance.json").read_text())
    assert provenance["packages"]["megatron-core"].endswith("+batchdependent")  # the plant ran
    assert provenance["schedule"]["name"] == "alone" and provenance["schedule"]["one_at_a_time"]


def test_a_decode_path_change_separates_the_forward_from_the_engine(tmp_path):
    overlay = planted.package_overlay("megatron-core", "decodepath", tmp_path / "overlay",
                                      {ATTENTION: PLANTED_DECODE_CHANGE})
    completed, report = invariance(tmp_path, "together,alone,forward", overlay)
    cells = report["table"]["cells"]
    assert cells["alone"]["together"]["passed"] and cells["together"]["alone"]["passed"]  # both decode the same way
    assert not cells["forward"]["together"]["passed"] and cells["forward"]["together"]["max_abs_delta"] > 1e-4
    assert cells["forward"]["together"]["tokens_agree"]  # the forward scores together's own tokens
    assert completed.returncode == 1 and "forward->together" in completed.stdout


def test_the_tiny_suites_schedule_table_is_produced_and_judged(tmp_path):
    completed, report = invariance(tmp_path, ",".join(schedules.SCHEDULES))
    table = report["table"]
    assert table["names"] == list(schedules.SCHEDULES) and not table["missing"] and not report["failed"]
    cells = [cell for row in table["cells"].values() for cell in row.values()]
    assert len(cells) == len(schedules.SCHEDULES) ** 2
    for name in schedules.SCHEDULES:
        assert table["cells"][name][name]["max_abs_delta"] == 0 and table["cells"][name][name]["passed"]
    assert table["cells"]["together"]["forward"]["tokens_agree"]
    verdict = "INVARIANT" if all(cell["passed"] for cell in cells) else "NOT INVARIANT"
    assert completed.returncode == (0 if verdict == "INVARIANT" else 1) and f"\n{verdict}:" in completed.stdout
    for name in schedules.SCHEDULES:
        assert report["runs"][name]["wall_s"] > 0 and report["runs"][name]["peak_rss_mib_max"] > 0
