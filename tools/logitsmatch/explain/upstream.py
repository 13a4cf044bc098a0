"""The upstream findings register: numerics bugs found in megatron-core, kept as data with an executable check.

``docs/upstream/upstream_findings.yaml`` indexes the findings; each has a folder under ``docs/upstream/`` with its
upstream-ready bug report. A finding's check runs one suite twice at the same tree, once as the suite runs and once
with the finding's run options (``--schedule chunked``: the path the bug is on), both with the check's common
options (``--layout tp2``), and compares the two at the check's tolerance: the finding **holds** where they differ
beyond it, is **absent** where they agree, and is **unrunnable** where either run fails (no evidence either way).
``logitsmatch upstream-check`` runs it at one release or commit; ``logitsmatch watch`` at each checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float
from logitsmatch.policy import Mode, Policy

HOLDS, ABSENT, UNRUNNABLE = "holds", "absent", "unrunnable"
REGISTER = Path("docs") / "upstream" / "upstream_findings.yaml"
EVIDENCE_ROWS = 8  # rows over the tolerance listed as evidence


@dataclass(frozen=True)
class Finding:
    """One entry of the register: what it is, where it was seen, and how to check it."""

    id: str
    title: str
    folder: str
    seen_in: tuple[str, ...]
    suite: str
    common: tuple[str, ...]  # ``logitsmatch run`` options of both runs (``--layout tp2``)
    path: tuple[str, ...]  # the options that take the run down the finding's path (``--schedule chunked``)
    abs_tol: float

    @property
    def runs(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The two runs' options: the reference, then the finding's path."""
        return self.common, (*self.common, *self.path)

    runs_per_check = 2


def load_register(project: Path | None = None) -> list[Finding]:
    from logitsmatch.suites import read_yaml

    path = (project or paths.project_root()) / REGISTER
    data = read_yaml(path)
    findings = []
    for entry in data.get("findings") or []:
        try:
            check = entry["check"]
            findings.append(Finding(
                str(entry["id"]), str(entry["title"]), str(entry["folder"]), tuple(map(str, entry["seen_in"])),
                str(check["suite"]), tuple(map(str, check.get("common", []))), tuple(map(str, check["path"])),
                float(check["abs_tol"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"{path}: a finding lacks or mistypes {exc}") from None
    return findings


def find(findings: list[Finding], name: str) -> Finding:
    for finding in findings:
        if finding.id == name:
            return finding
    raise BadInput(f"unknown finding {name!r} (known: {', '.join(f.id for f in findings) or 'none'})")


def finding_status(finding: Finding, document: Callable[[str, tuple[str, ...]], dict | None]) -> tuple[str, dict]:
    """``document(suite, options)``: that run's result (None: it did not run). The status and its evidence."""
    reference, on_path = (document(finding.suite, options) for options in finding.runs)
    if reference is None or on_path is None:
        return UNRUNNABLE, {"evidence": "a run of the check did not finish"}
    result = compare(reference, on_path, Policy(mode=Mode.APPROXIMATE, abs_tol=finding.abs_tol, rel_tol=0.0,
                                                failure_budget=0))
    drift = result.drift
    over = np.flatnonzero(np.abs(drift.delta()) > finding.abs_tol) if len(drift) else np.array([], dtype=int)
    rows = [{"request": result.request_order[int(drift.request[row])], "index": int(drift.index[row]),
             "part": "generated" if bool(drift.generated[row]) else "prompt",
             "reference": json_float(float(drift.golden[row])), "on_path": json_float(float(drift.current[row]))}
            for row in over[:EVIDENCE_ROWS]]
    holds = bool(len(over)) or not result.tokens_agree
    evidence = {"over_tolerance": int(len(over)), "tokens_agree": result.tokens_agree,
                "max_abs_delta": json_float(result.max_abs_delta), "rows": rows}
    return (HOLDS if holds else ABSENT), evidence
