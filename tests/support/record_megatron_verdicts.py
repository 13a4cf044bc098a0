"""Record Megatron-LM's verdict on every parity case, from a Megatron-LM checkout, into tests/data.

    python tests/support/record_megatron_verdicts.py --megatron-lm DIR [--megatron-cases DIR] [--output FILE]

Runs the comparator of the checkout at DIR (imported by path, nothing copied) on every case of
support.parity_cases and writes tests/data/megatron_verdicts.json atomically: per case id its
verdict and the first line of its exception, with the checkout's commit (git rev-parse HEAD) and
the comparator file's sha256. Megatron's case folders (for the cases on its goldens) come from
../shared/megatron_cases or $LOGITSMATCH_MEGATRON_CASES. Run it with the tests' interpreter
(e.g. .nox/tests/bin/python): the comparator imports pytest, numpy and yaml. Exit 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS.parent / "tools")]

from support import megatron_case_dirs, megatron_cases_folder  # noqa: E402
from support.megatron_reference import (  # noqa: E402
    COMPARATOR,
    HASH_SEED,
    RECORDED,
    checkout_from_env,
    comparator_file,
    git_head,
    judge,
    load_comparator,
    sha256,
)
from support.parity_cases import all_cases  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megatron-lm", type=Path, default=checkout_from_env(), metavar="DIR",
                        help="a Megatron-LM checkout (default: $MEGATRON_LM_DIR)")
    parser.add_argument("--megatron-cases", type=Path, default=None, metavar="DIR",
                        help="Megatron's case folders (default: $LOGITSMATCH_MEGATRON_CASES, else "
                             "../shared/megatron_cases)")
    parser.add_argument("--no-megatron-cases", action="store_true",
                        help="leave out the cases on Megatron's goldens (only with --output elsewhere)")
    parser.add_argument("--output", type=Path, default=RECORDED, metavar="FILE", help="default: %(default)s")
    return parser.parse_args(argv)


def record(checkout: Path, case_dirs: list[Path] | None, output: Path) -> Counter:
    comparator = load_comparator(checkout)
    cases = all_cases(case_dirs)
    verdicts = {}
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            assert case.id not in verdicts, f"two cases with the id {case.id}"
            verdicts[case.id] = judge(comparator, case, Path(workdir))
    document = {
        "megatron_lm_commit": git_head(checkout),
        "comparator": str(COMPARATOR),
        "comparator_sha256": sha256(comparator_file(checkout)),
        "python_hash_seed": int(HASH_SEED),
        "verdicts": dict(sorted(verdicts.items())),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=output.parent, prefix=f".{output.name}.", delete=False) as tmp:
        json.dump(document, tmp, indent=1, ensure_ascii=False)
        tmp.write("\n")
    os.chmod(tmp.name, 0o644)  # a temp file is private; the recorded file is data like any other
    os.replace(tmp.name, output)
    return Counter(verdict["verdict"] for verdict in verdicts.values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.megatron_lm is None:
        return _bad_input("no Megatron-LM checkout: pass --megatron-lm DIR or set MEGATRON_LM_DIR")
    if not (args.megatron_lm / COMPARATOR).is_file():
        return _bad_input(f"{args.megatron_lm} is not a Megatron-LM checkout: it has no {COMPARATOR}")
    if args.no_megatron_cases and args.output.resolve() == RECORDED:
        return _bad_input("the recorded verdicts must cover every case: --no-megatron-cases needs --output elsewhere")
    case_dirs = None
    if not args.no_megatron_cases:
        folder = args.megatron_cases or megatron_cases_folder()
        case_dirs = megatron_case_dirs(folder) if folder.is_dir() else []
        if not case_dirs:
            return _bad_input(f"no Megatron case folders in {folder} (--megatron-cases DIR)")
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:  # Megatron walks request ids as a set: fix its order
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": HASH_SEED})
    counts = record(args.megatron_lm, case_dirs, args.output)
    print(f"{sum(counts.values())} verdicts ({counts['pass']} pass, {counts['fail']} fail) of Megatron-LM "
          f"{git_head(args.megatron_lm)[:10]} written to {args.output}")
    return 0


def _bad_input(message: str) -> int:
    print(f"record_megatron_verdicts: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
