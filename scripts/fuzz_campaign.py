"""Fuzz campaign: generated bad input for `logitsmatch compare` and for the suite/config loader.

    PYTHONPATH=tools python scripts/fuzz_campaign.py [--compare N] [--suites N] [--subprocess N] [--generated N]

Inputs come from hypothesis: golden-format JSON with structural and value
mutations (NaN/inf, huge integers, wrong types, missing fields, deep nesting,
truncation at any byte, random bytes, empty files) and text option values for
`compare`; suite folders (model_config.yaml, logitsmatch.yaml and the model
architecture file) mutated the same way, plus unsafe YAML tags, for `run`.

Every input goes through ``logitsmatch.cli.main`` — the CLI itself, in
process, so thousands of inputs fit in a minute — with stdout and stderr
captured. An input passes when the exit code is documented (0 match, 1 drift,
2 bad input) and a bad input is one stderr line; any exception escaping the
CLI is what a user would see as a traceback and is counted. For `run` the
launch is replaced by a sentinel (no ranks start), the checkpoint cache by a
stub, and the toolchain check by a no-op, so a valid suite ends at "would
launch". A sample is replayed through ``python -m logitsmatch`` subprocesses
to check that real stderr has no "Traceback". golden_values/ is hashed before
and after.

Then every hostile case of tests/support/fuzz.py (special files, the size cap,
wrong types, duplicate ids, double encoding, deep nesting, surrogates, binary
YAML, path-like names, outputs over inputs, for every subcommand that reads
files) plus ``--generated`` seeded compare inputs, each in its own process with
a 10 s limit: the figures are cases run, tracebacks, hangs, crashes reported
as drift (exit 1 for a bad input), internal errors (exit 70), other problems
(inputs changed, output modes, multi-line errors) and the slowest case.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT / "tools"), str(PROJECT / "tests")]

from support import DEFAULT_TOOLCHAIN, goldens_changed, goldens_digest  # noqa: E402
from support.fuzz import fuzz_compare, fuzz_suites, hostile_cases, replay_in_subprocesses, run_cases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=int, default=700, help="generated inputs for `logitsmatch compare`")
    parser.add_argument("--suites", type=int, default=500, help="generated suite folders for `logitsmatch run`")
    parser.add_argument("--subprocess", type=int, default=25, help="compare inputs replayed through real processes")
    parser.add_argument("--generated", type=int, default=200, help="seeded compare inputs beside the hostile cases")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--toolchain", default=None, help="toolchain name for `run` (default: the project's default)")
    args = parser.parse_args(argv)

    toolchain = args.toolchain or DEFAULT_TOOLCHAIN
    before = goldens_digest()
    work = Path(tempfile.mkdtemp(prefix="logitsmatch-fuzz-"))
    started = time.monotonic()
    try:
        tallies = [
            fuzz_compare(args.compare, work / "compare", args.seed),
            fuzz_suites(args.suites, work / "suites", args.seed, toolchain),
            replay_in_subprocesses(args.subprocess, work / "replay", args.seed),
        ]
        cases = hostile_cases(work / "hostile", args.seed, args.generated)
        outcomes = run_cases(cases, work / "hostile", args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    changed = goldens_changed(before)
    for tally in tallies:
        codes = ", ".join(f"exit {code}: {count}" for code, count in sorted(tally.codes.items()))
        print(f"{tally.name:18} inputs {tally.inputs:5}  tracebacks {len(tally.tracebacks)}  "
              f"multi-line errors {len(tally.multiline)}  undocumented exits {len(tally.undocumented)}  ({codes})")
        distinct = {}
        for line in tally.tracebacks + tally.multiline + tally.undocumented:
            distinct.setdefault(line.strip().splitlines()[-1], line)
        if tally.features:
            print(
                "                   holding " + ", ".join(f"{name}: {count}" for name, count in tally.features.items())
            )
        for last, line in list(distinct.items())[:8]:
            print(f"    {sum(1 for trace in tally.tracebacks if trace.strip().endswith(last))}x {line[-900:]}")
    total = sum(t.inputs for t in tallies)
    slowest = max(outcomes, key=lambda outcome: outcome.seconds)
    problems = [outcome for outcome in outcomes if outcome.problems]
    print()
    print(f"hostile cases, each its own process (seed {args.seed})")
    print(f"  cases run                    {len(outcomes)} ({len(outcomes) - args.generated} named, "
          f"{args.generated} generated)")
    print(f"  tracebacks                   {sum(outcome.traceback for outcome in outcomes)}")
    print(f"  hangs (> 10 s)               {sum(outcome.hang for outcome in outcomes)}")
    print(f"  crashes reported as drift    {sum(outcome.crash_as_drift for outcome in outcomes)}")
    print(f"  internal errors (exit 70)    {sum(outcome.code == 70 for outcome in outcomes)}")
    print(f"  cases with any problem       {len(problems)}")
    print(f"  slowest case                 {slowest.seconds:.1f} s ({slowest.case.name})")
    codes: dict = {}
    for outcome in outcomes:
        codes[outcome.code] = codes.get(outcome.code, 0) + 1
    print("  exit codes                   " + ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str)))
    for outcome in problems[:10]:
        print(f"    {outcome.case.name}: {'; '.join(outcome.problems)}")
    print()
    print(f"generated inputs         {total}")
    print(f"tracebacks               {sum(len(t.tracebacks) for t in tallies)}")
    print(f"multi-line bad-input     {sum(len(t.multiline) for t in tallies)}")
    print(f"undocumented exit codes  {sum(len(t.undocumented) for t in tallies)}")
    print(f"goldens changed          {len(changed)}" + (f" {changed}" if changed else ""))
    print(f"wall time                {time.monotonic() - started:.0f} s")
    return 1 if changed or problems or any(t.problems for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
