"""The inference family's coverage table: for each of Megatron-LM's inference cases, whether it runs here.

``docs/family/coverage.json`` is the one record (one row per case folder of Megatron-LM's
tests/functional_tests/test_cases at the commit the suites come from); ``docs/family/README.md`` is drawn
from it (``render.family``, ``scripts/family_coverage.py``) and never edited by hand. A row says:

* ``runs``: the case has a suite here (its model_config.yaml unchanged), a tiny sibling, and goldens;
* ``runs-with-difference``: the same, and ``reason`` names what the CPU profile does instead of what the
  case asks (beyond the profile's standing choices that every CPU run makes: docs/family/README.md);
* ``cannot-run``: ``reason`` says why, beginning "needs CUDA: " where the case cannot run without a GPU, or
  "not yet built here: " where logitsmatch lacks what it takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.files import read_input

COVERAGE = Path("docs") / "family" / "coverage.json"
RENDERED = Path("docs") / "family" / "README.md"
STATUSES = ("runs", "runs-with-difference", "cannot-run")
CANNOT_RUN_PREFIXES = ("needs CUDA: ", "not yet built here: ")
FIELDS = ("case", "status", "suite", "tiny", "reason")


@dataclass(frozen=True)
class Row:
    case: str
    status: str
    suite: str | None
    tiny: str | None
    reason: str | None

    @property
    def runs(self) -> bool:
        return self.status != "cannot-run"


def check_row(row: Row) -> None:
    """The table's rules for one row (BadInput naming the case)."""
    if row.status not in STATUSES:
        raise BadInput(f"{row.case}: status {row.status!r} is not one of {', '.join(STATUSES)}")
    if row.reason is not None and (not isinstance(row.reason, str) or not row.reason.strip() or "\n" in row.reason):
        raise BadInput(f"{row.case}: reason must be one line of text")
    if row.status != "runs" and row.reason is None:
        raise BadInput(f"{row.case}: a {row.status} row must say why")
    if row.runs and not (row.suite and row.tiny):
        raise BadInput(f"{row.case}: a case that runs names its suite and its tiny sibling")
    if row.status == "cannot-run":
        if row.suite is not None or row.tiny is not None:
            raise BadInput(f"{row.case}: a case that cannot run has no suite")
        if not row.reason.startswith(CANNOT_RUN_PREFIXES):
            raise BadInput(f"{row.case}: a cannot-run reason begins with {' or '.join(map(repr, CANNOT_RUN_PREFIXES))}")


def load_coverage(project: Path) -> list[Row]:
    """The rows of coverage.json, checked (one per case, sorted by case, every rule of ``check_row``)."""
    path = project / COVERAGE
    try:
        document = json.loads(read_input(path, "coverage table"))
    except ValueError:
        raise BadInput(f"{path} is not valid JSON") from None
    if not isinstance(document, list):
        raise BadInput(f"{path}: expected a list of rows")
    rows = []
    for entry in document:
        if not isinstance(entry, dict) or set(entry) != set(FIELDS):
            raise BadInput(f"{path}: each row has exactly the fields {', '.join(FIELDS)}: {entry!r:.120}")
        row = Row(**entry)
        check_row(row)
        rows.append(row)
    names = [row.case for row in rows]
    if names != sorted(set(names)):
        raise BadInput(f"{path}: rows must be sorted by case, one per case")
    return rows


def family_suites(project: Path) -> list[str]:
    """What ``nox -s logitsmatch -- family`` runs: the suite and the tiny sibling of every case that runs here."""
    return [suite for row in load_coverage(project) if row.runs for suite in (row.suite, row.tiny)]
