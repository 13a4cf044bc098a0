"""Draw docs/family/README.md from docs/family/coverage.json.

    python scripts/family_coverage.py [--check]

--check writes nothing and exits 1 where the README differs from what the table draws. Exit 2: the table breaks
one of its rules (logitsmatch.family).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch.errors import BadInput  # noqa: E402
from logitsmatch.family import RENDERED, load_coverage  # noqa: E402
from logitsmatch.files import write_atomic  # noqa: E402
from logitsmatch.render.family import coverage_markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the README is up to date")
    args = parser.parse_args(argv)
    try:
        text = coverage_markdown(load_coverage(PROJECT))
    except BadInput as exc:
        print(f"family_coverage: {exc}", file=sys.stderr)
        return 2
    target = PROJECT / RENDERED
    if args.check:
        current = target.read_text() if target.is_file() else None
        print(f"{RENDERED} is {'up to date' if current == text else 'stale: run python scripts/family_coverage.py'}")
        return 0 if current == text else 1
    write_atomic(target, text)
    print(f"wrote {RENDERED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
