"""Fault campaign: inject every lifecycle fault into real TP8 runs and print the figures.

    PYTHONPATH=tools python scripts/fault_campaign.py [--only NAME ...] [--timeout S]

Each fault starts ``logitsmatch run`` on the tiny suite (8 gloo ranks, the
ZMQ coordinator, a real InferenceClient) in a fresh results folder, waits for
the phase the fault needs, injects it, and checks that the run ended within
its deadline plus a short grace with the documented exit code and one
message naming the rank and phase, that no process tagged with the run's id
is left, that nothing was published as a result, that no traceback of the
harness itself reached stderr, and that golden_values/ is byte-for-byte
unchanged. Runs go one at a time (the machine has few cores) except in the
concurrency case, which runs two at once on purpose.

The injectors live in tests/support/faults.py (tests/inference/test_faults.py uses them too).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "tools"), str(PROJECT / "tests")]

from support import goldens_changed, goldens_digest, installed_toolchain  # noqa: E402
from support.faults import (  # noqa: E402
    DEFAULT_TIMEOUT_S,
    SUITE,
    Outcome,
    checkpoint_of,
    concurrent_runs,
    fault_coordinator_port_taken,
    fault_ctrl_c,
    fault_deadline,
    fault_kill_coordinator,
    fault_master_port_taken,
    fault_parent_sigkill,
    fault_sigkill_rank,
    fault_sigkill_zygote,
    fault_sigstop_rank,
    fault_truncated_checkpoint,
)

FAULTS = ("sigkill-rank", "sigstop-rank", "kill-coordinator", "ctrl-c", "deadline", "master-port-taken",
          "coordinator-port-taken", "sigkill-zygote", "sigstop-rank-weights", "ctrl-c-init", "sigterm-weights",
          "sigkill-run", "sigkill-parent",
          "concurrent",
          "truncated-checkpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=FAULTS, help="run only these faults")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="each run's deadline (s)")
    parser.add_argument("--keep", action="store_true", help="keep the results folders")
    args = parser.parse_args(argv)
    toolchain = installed_toolchain()
    if toolchain is None:
        print("this interpreter matches no toolchain in pyproject.toml (needs torch + megatron-core)", file=sys.stderr)
        return 2
    wanted = args.only or FAULTS
    goldens_before = goldens_digest()
    work = Path(tempfile.mkdtemp(prefix="logitsmatch-faults-"))
    outcomes: list[Outcome] = []
    started = time.monotonic()
    t = args.timeout
    plan = {
        "sigkill-rank": lambda d: [fault_sigkill_rank(d, toolchain, t)],
        "sigstop-rank": lambda d: [fault_sigstop_rank(d, toolchain, t)],
        "kill-coordinator": lambda d: [fault_kill_coordinator(d, toolchain, t)],
        "ctrl-c": lambda d: [fault_ctrl_c(d, toolchain, t)],
        "deadline": lambda d: [fault_deadline(d, toolchain)],
        "master-port-taken": lambda d: [fault_master_port_taken(d, toolchain, t)],
        "coordinator-port-taken": lambda d: [fault_coordinator_port_taken(d, toolchain, t)],
        "sigkill-zygote": lambda d: [fault_sigkill_zygote(d, toolchain, t)],
        "sigstop-rank-weights": lambda d: [fault_sigstop_rank(d, toolchain, t, rank=2, phase="weights")],
        "ctrl-c-init": lambda d: [fault_ctrl_c(d, toolchain, t, phase="init")],
        "sigterm-weights": lambda d: [fault_ctrl_c(d, toolchain, t, phase="weights", sig=signal.SIGTERM)],
        "sigkill-run": lambda d: [fault_parent_sigkill(d, toolchain, t)],
        "sigkill-parent": lambda d: [fault_parent_sigkill(d, toolchain, t, under_parent=True)],
        "concurrent": lambda d: concurrent_runs(d, toolchain, t),
    }
    try:
        for name in wanted:
            if name == "truncated-checkpoint":
                continue
            print(f"[fault] {name} ...", flush=True)
            for outcome in plan[name](work / name):
                outcomes.append(outcome)
                _print_outcome(outcome)
        if "truncated-checkpoint" in wanted:
            source = next(
                filter(None, (checkpoint_of(d / SUITE / "cpu" / toolchain) for d in work.glob("*/shared"))), None
            )
            if source is None:
                source = checkpoint_of(work / "coordinator-port-taken" / SUITE / "cpu" / toolchain)
            if source is None:
                print(
                    "[fault] truncated-checkpoint skipped: needs a successful run first (concurrent or "
                    "coordinator-port-taken)"
                )
            else:
                print("[fault] truncated-checkpoint ...", flush=True)
                outcome = fault_truncated_checkpoint(work / "truncated", toolchain, t, source)
                outcomes.append(outcome)
                _print_outcome(outcome)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    changed_goldens = goldens_changed(goldens_before)
    failures = [outcome for outcome in outcomes if outcome.problems()]
    faults = [outcome for outcome in outcomes if outcome.expected_rc != (0,)]
    print()
    print(f"toolchain                      {toolchain}")
    print(f"faults injected                {len(faults)} (plus {len(outcomes) - len(faults)} runs that must succeed)")
    print(f"runs ended within deadline     {sum(o.within_deadline for o in outcomes)} of {len(outcomes)}")
    print(f"orphan processes left          {sum(len(o.leftovers) for o in outcomes)}")
    print(f"failed runs that published    {sum(o.published and o.rc != 0 for o in outcomes)}")
    print(f"goldens changed                {len(changed_goldens)}" + (f" {changed_goldens}" if changed_goldens else ""))
    print(f"tracebacks                     {sum(o.traceback for o in outcomes)}")
    print(f"runs with problems             {len(failures)}")
    print(f"campaign wall time             {time.monotonic() - started:.0f} s")
    return 1 if failures or changed_goldens else 0


def _print_outcome(outcome: Outcome) -> None:
    first = next((line for line in outcome.message.splitlines() if line.startswith("logitsmatch run:")), "")
    after = (
        f", ended {outcome.after_injection_s:.1f} s after injection" if outcome.after_injection_s is not None else ""
    )
    verdict = "ok" if not outcome.problems() else "PROBLEM: " + "; ".join(outcome.problems())
    print(f"  rc {outcome.rc}, {outcome.elapsed_s:.1f} s (deadline {outcome.deadline_s:.0f} s){after}, "
          f"leftovers {len(outcome.leftovers)} -> {verdict}")
    if first:
        print(f"  {first[:300]}")


if __name__ == "__main__":
    sys.exit(main())
