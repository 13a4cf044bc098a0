"""`logitsmatch watch`: which commits of a git source move which suite, each change proven.

The walk, per suite: the first-parent commits of A..B (A first) are run every ``every`` commits and at B (the
checkpoints); two consecutive runnable checkpoints that differ bitwise (deterministic mode) are bisected
(``bisect.first_bad``) for the first commit that differs from the earlier one; when that commit does not give the
later checkpoint's numbers, another change lies after it and the bisection goes on from it. Each change is proven:

* its parent reproduces the earlier checkpoint's numbers and the commit the later one's (or the next change's
  parent's, when another change follows);
* when it touches several files of the package, the one file (or smallest set) that alone moves it: the parent's
  tree with those files of the commit (``bisect.isolate``), as docs/explain/releases/moe-commit did by hand;
* the first moving module, where the runs' captures allow (``first_module.first_moving_module``).

A commit that cannot be installed or run is unrunnable: named with its error, never a change, and never hiding one
(a bisection skips it; where only unrunnable commits lie between a good and a moved commit the change is
*undecided* and the report lists the commits it may be). Every run goes through ``watch_store.Store``, which saves
it; upstream findings (``explain.upstream``) are checked at each checkpoint and bisected where their status flips.

Bound, per suite: with c commits after A sampled every N and k changes, ⌈c/N⌉ + 1 checkpoints (both ends) and at
most ⌈log2 N⌉ runs per change, plus 2·⌈log2 f⌉ for a change touching f > 1 files, plus one per unrunnable commit
a bisection meets and what an unrunnable checkpoint adds to the interval around it (⌈log2 2N⌉ - ⌈log2 N⌉); each
finding costs its check's runs at each checkpoint and ⌈log2 N⌉ checks per status change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch.explain import gitsource
from logitsmatch.explain.bisect import UNRESOLVED, first_bad, isolate, search_bound
from logitsmatch.explain.first_module import first_moving_module
from logitsmatch.explain.upstream import ABSENT, UNRUNNABLE, Finding, finding_status
from logitsmatch.explain.watch_store import BudgetSpent, Job, Outcome, Store, Tree
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.policy import Mode, Policy

BITWISE = Policy(mode=Mode.DETERMINISTIC)


def checkpoints(count: int, every: int) -> list[int]:
    """Indices of the commits run first: 0, every, 2·every, ... and the last (``count`` commits, A first)."""
    indices = list(range(0, count, every))
    return indices if indices[-1] == count - 1 else [*indices, count - 1]


@dataclass
class Source:
    """The git source watched: the package, its checkout, the range as given and its first-parent commits."""

    package: str
    gitdir: str
    range: str
    commits: list[gitsource.Commit]

    @property
    def folder(self) -> str | None:
        return gitsource.PACKAGE_FOLDERS.get(self.package)


@dataclass
class Bound:
    """The runs one suite (or finding) may take, and why it grew beyond the checkpoints."""

    checkpoints: int
    per_change: int
    changes: int = 0
    extra: list[tuple[int, str]] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return self.checkpoints + self.changes * self.per_change + sum(runs for runs, _ in self.extra)

    def to_dict(self) -> dict:
        return {"checkpoints": self.checkpoints, "per_change": self.per_change, "changes": self.changes,
                "extra": [{"runs": runs, "why": why} for runs, why in self.extra], "runs": self.runs}


class Watch:
    """One watch over a source's range: suites walked, changes bisected and proven, findings followed."""

    def __init__(self, source: Source, suites: list[str], every: int, store: Store, findings: list[Finding] = ()):
        self.source, self.suites, self.every, self.store = source, suites, every, store
        self.findings = list(findings)
        self.commits = source.commits
        self.index = {commit.sha: i for i, commit in enumerate(self.commits)}
        self.sampled = checkpoints(len(self.commits), every)
        self.documents: dict[Path, dict] = {}
        self.unrunnable: dict[str, str] = {}  # sha -> the one line saying why it did not run
        self.changes: dict[str, dict] = {}  # sha -> the change (suites it moved, each with its proof)
        self.undecided: list[dict] = []
        self.finding_reports: dict[str, dict] = {}
        self.bounds: dict[str, Bound] = {}
        self.stopped: str | None = None

    # --- runs and comparisons ----------------------------------------------------------------------
    def outcome(self, i: int, suite: str, options: tuple[str, ...] = ()) -> Outcome:
        return self.store.outcome(Job(Tree(self.commits[i].sha), suite, options))

    def evidence_span(self) -> tuple[int, int] | None:
        """The first and last checkpoint every suite ran at: outside them no stretch is known to be quiet."""
        spans = []
        for suite in self.suites:
            ran = [i for i in self.sampled
                   if (o := self.store.known.get(Job(Tree(self.commits[i].sha), suite))) is not None and o.ok]
            if not ran:
                return None
            spans.append((ran[0], ran[-1]))
        first, last = max(span[0] for span in spans), min(span[1] for span in spans)
        return (first, last) if first < last else None

    def note_unrunnable(self) -> None:
        """The commits a suite could not run at (a finding's run failing on its own path says so in its status)."""
        for job, outcome in self.store.known.items():
            if not outcome.ok and job.tree.take is None and not job.options:
                self.unrunnable.setdefault(job.tree.sha, outcome.error or "no result")

    def document(self, outcome: Outcome) -> dict:
        if outcome.result not in self.documents:
            self.documents[outcome.result] = load_golden(outcome.result)
        return self.documents[outcome.result]

    def same(self, first: Outcome, second: Outcome) -> bool:
        return compare(self.document(first), self.document(second), BITWISE).passed

    # --- the walk -------------------------------------------------------------------------------------
    def walk(self) -> None:
        """Every suite, then every finding; a spent budget stops it where it is (the report says so)."""
        per_change = math.ceil(math.log2(self.every)) if self.every > 1 else 0
        for suite in self.suites:
            self.bounds[suite] = Bound(len(self.sampled), per_change)
        for finding in self.findings:
            self.bounds[f"finding {finding.id}"] = Bound(len(self.sampled) * finding.runs_per_check,
                                                         per_change * finding.runs_per_check)
        try:
            self.store.outcomes([Job(Tree(self.commits[i].sha), suite) for suite in self.suites
                                 for i in self.sampled])  # one batch: in parallel where the executor can
            for suite in self.suites:
                self.walk_suite(suite)
            for finding in self.findings:
                self.follow(finding)
        except BudgetSpent as exc:
            self.stopped = f"{exc}: stopped cleanly; what it found so far is reported, and the next watch resumes"
        self.note_unrunnable()

    def walk_suite(self, suite: str) -> None:
        earlier = None
        for i in self.sampled:
            if not self.outcome(i, suite).ok:
                continue
            if earlier is not None and not self.same(self.outcome(earlier, suite), self.outcome(i, suite)):
                self.locate(suite, earlier, i)
            earlier = i

    def locate(self, suite: str, low: int, high: int) -> None:
        """Every change between the runnable checkpoints ``low`` and ``high`` (which differ), oldest first."""
        bound = self.bounds[suite]
        while True:
            base = self.outcome(low, suite)

            def test(sha: str, base=base) -> str:
                tried = self.outcome(self.index[sha], suite)
                return UNRESOLVED if not tried.ok else "good" if self.same(base, tried) else "bad"

            bound.changes += 1
            wider = math.ceil(math.log2(high - low)) - bound.per_change if high - low > 1 else 0
            if wider > 0:  # an unrunnable checkpoint: the interval spans more than N commits
                bound.extra.append((wider, f"{self.commits[low].short}..{self.commits[high].short} spans "
                                           f"{high - low} commits (an unrunnable checkpoint lies inside)"))
            found, skipped = first_bad([c.sha for c in self.commits[low:high + 1]], test)
            if skipped:  # each costs the bisection one more test, a neighbour
                bound.extra.append((len(skipped), f"{len(skipped)} unrunnable commit(s) met bisecting "
                                                  f"{self.commits[low].short}..{self.commits[high].short}"))
            if found is None:
                self.undecided.append({"suite": suite, "after": self.commits[low].sha, "to": self.commits[high].sha,
                                       "unrunnable": skipped, "note": "only unrunnable commits lie between the last "
                                       "commit with the earlier numbers and the first with other ones"})
                return
            position = self.index[found]
            self.prove(suite, low, position, high)
            if self.same(self.outcome(position, suite), self.outcome(high, suite)):
                return
            low = position

    # --- the proof of one change -------------------------------------------------------------------------
    def prove(self, suite: str, low: int, position: int, high: int) -> None:
        commit, parent = self.commits[position], self.commits[position - 1]
        before, after, parents = self.outcome(low, suite), self.outcome(position, suite), self.outcome(position - 1,
                                                                                                         suite)
        moved = compare(self.document(before), self.document(after), BITWISE)
        later = self.outcome(high, suite)
        proof = {
            "earlier": self.commits[low].sha, "parent": parent.sha, "later": self.commits[high].sha,
            "parent_reproduces_earlier": self.same(parents, before),
            "commit_reproduces_later": self.same(after, later),
            "files": self.files_alone(suite, parent.sha, commit.sha, parents, after),
        }
        if not proof["commit_reproduces_later"]:
            proof["note"] = "another change follows before the later checkpoint (bisected next)"
        module = first_moving_module(parents.result, after.result)
        proof["first_module"] = module["first_module"] or {"problem": module["localization"].get("problem")
                                                           or module["localization"].get("steps_problem")}
        entry = self.changes.setdefault(commit.sha, {
            "commit": commit.sha, "subject": commit.subject, "position": position,
            "files": gitsource.files_touched(self.source.gitdir, commit.sha, self.source.folder), "suites": {}})
        entry["suites"][suite] = {
            "moved": {"logprobs": moved.n_moved, "of": moved.n_compared,
                      "max_abs_delta": json_float(moved.max_abs_delta), "max_ulps": moved.max_ulps,
                      "ulp_width": moved.ulp_width, "tokens_changed": not moved.tokens_agree},
            "proof": proof}

    def files_alone(self, suite: str, parent: str, sha: str, parents: Outcome, after: Outcome) -> dict:
        """Which of the commit's package files alone move the suite: the parent's tree with only those taken."""
        files = gitsource.files_touched(self.source.gitdir, sha, self.source.folder)
        if len(files) <= 1:
            return {"touched": files, "alone": files, "how": "the commit touches one file of the package"
                    if files else "the commit touches no file of the package"}

        def test(config: frozenset[str]) -> str:
            tried = self.store.outcome(Job(Tree(parent, (sha, tuple(sorted(config)))), suite))
            if not tried.ok:
                return UNRESOLVED
            return "bad" if self.same(tried, after) else "good" if self.same(tried, parents) else "other"

        bound = self.bounds[suite]
        bound.extra.append((search_bound(len(files)), f"{sha[:10]} touches {len(files)} "
                                                       "files: which alone moves it"))
        found = isolate(files, test, announce=lambda why, runs: bound.extra.append((runs, why)))
        return {"touched": files, "alone": sorted(found.culprits), "proven": found.proven,
                "how": "the parent's tree with only these files of the commit gives the commit's numbers, and the "
                       "commit's other files over the parent give the parent's" if found.proven else
                       "; ".join(found.notes) or "not proven",
                "tested": [{"files": sorted(config), "outcome": outcome} for config, outcome in found.outcomes.items()
                           if config and len(config) < len(files)]}

    # --- findings ----------------------------------------------------------------------------------------------
    def status(self, finding: Finding, i: int) -> tuple[str, dict]:
        def document(suite: str, options: tuple[str, ...]) -> dict | None:
            outcome = self.outcome(i, suite, options)
            return self.document(outcome) if outcome.ok else None

        return finding_status(finding, document)

    def follow(self, finding: Finding) -> None:
        """The finding's status at each checkpoint; where it flips, the commit it flips at (bisected)."""
        report = self.finding_reports[finding.id] = {"id": finding.id, "title": finding.title, "statuses": {},
                                                     "changes": []}
        earlier = None
        for i in self.sampled:
            status, evidence = self.status(finding, i)
            report["statuses"][self.commits[i].sha] = {"status": status, **evidence}
            if status == UNRUNNABLE:
                continue
            if earlier is not None and status != self.status(finding, earlier)[0]:
                self.flip(finding, earlier, i, report)
            earlier = i
        known = [v["status"] for v in report["statuses"].values() if v["status"] != UNRUNNABLE]
        report["at_start"], report["at_end"] = (known[0], known[-1]) if known else (UNRUNNABLE, UNRUNNABLE)

    def flip(self, finding: Finding, low: int, high: int, report: dict) -> None:
        was = self.status(finding, low)[0]
        self.bounds[f"finding {finding.id}"].changes += 1

        def test(sha: str) -> str:
            status = self.status(finding, self.index[sha])[0]
            return UNRESOLVED if status == UNRUNNABLE else "good" if status == was else "bad"

        found, skipped = first_bad([c.sha for c in self.commits[low:high + 1]], test)
        if found is None:
            report["changes"].append({"commit": None, "after": self.commits[low].sha, "to": self.commits[high].sha,
                                      "unrunnable": skipped, "from": was, "now": "undecided"})
            return
        now = self.status(finding, self.index[found])[0]
        commit = self.commits[self.index[found]]
        word = "fixed" if now == ABSENT else "appeared"
        report["changes"].append({"commit": found, "subject": commit.subject, "from": was, "now": now,
                                  "note": f"{word} at commit {commit.short} '{commit.subject}'"})
