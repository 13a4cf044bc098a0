"""The runs of a watch, saved: one record per (tree, suite, toolchain, hardware class) under the watch folder.

A record is written (atomically) as soon as its run ends, a failed run's error included, so a second watch over
the same range runs nothing, an extended range runs only its new commits, and a watch killed in the middle of a
run resumes with that run (its result folder, incomplete, is written again). A record made by other harness code
(``suite_runs.harness_digest``) is not reused: its numbers may differ for the harness's reasons.

Layout: ``<watch>/store/<toolchain>/<hardware class>/<suite key>/<tree>.json``, the results beside them under
``results/``. A suite key is the suite, or ``<suite>@<options>`` for a run with further options (an upstream check's);
a tree is a commit, or a parent with files of a commit (``gitsource.tree_name``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.explain import gitsource
from logitsmatch.judge.golden_io import write_json_atomic


@dataclass(frozen=True)
class Tree:
    """What one run installs: a commit's tree, or its tree with ``take`` = (commit, files) taken from another."""

    sha: str
    take: tuple[str, tuple[str, ...]] | None = None

    @property
    def name(self) -> str:
        return gitsource.tree_name(self.sha, self.take)


@dataclass(frozen=True)
class Job:
    """One suite run at one tree; ``options``: further ``logitsmatch run`` options (none: the suite as it is)."""

    tree: Tree
    suite: str
    options: tuple[str, ...] = ()

    @property
    def suite_key(self) -> str:
        """The suite, or ``<suite>@<the options' values>``: ``<suite>@tp2-chunked`` for --layout tp2 --schedule
        chunked."""
        values = [option for option in self.options if not option.startswith("--")]
        return self.suite if not self.options else f"{self.suite}@{'-'.join(values)}"


@dataclass(frozen=True)
class Outcome:
    """What a run left: its result file, or the one line saying why there is none."""

    result: Path | None
    error: str | None
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.result is not None


# runs jobs (in parallel where the executor can), results under the folder given: one outcome per job, in the
# jobs' order, each yielded as soon as it is known (so it is saved before the next one ends)
Runner = Callable[[Sequence[Job], Path], Iterator[Outcome]]


class BudgetSpent(Exception):
    """The watch may start no further run (``--budget``): it stops and writes what it has."""


class Store:
    """Saved runs of one toolchain on one hardware class; ``outcomes`` runs what is not saved, within the budget."""

    def __init__(self, folder: Path, toolchain: str, hardware: str, harness: str, runner: Runner,
                 budget: int | None = None):
        self.root = folder / "store" / toolchain / hardware
        self.harness = harness
        self.runner = runner
        self.budget = budget
        self.runs: list[dict] = []  # this watch's runs in order, reused ones included (watch.json's "runs")
        self.known: dict[Job, Outcome] = {}
        self.new_runs = 0

    def _record_path(self, job: Job) -> Path:
        return self.root / job.suite_key / f"{job.tree.name}.json"

    def saved(self, job: Job) -> Outcome | None:
        path = self._record_path(job)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record.get("harness") != self.harness:
            return None
        result = self.root / record["result"] if record["result"] else None
        if result is not None and not result.is_file():
            return None
        return Outcome(result, record["error"], record["wall_s"])

    def outcome(self, job: Job) -> Outcome:
        return self.outcomes([job])[0]

    def outcomes(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Each job's outcome: known to this watch, else saved, else run (all unsaved ones in one batch, each saved
        as it ends, as far as the budget goes; past it ``BudgetSpent`` once the ones that fit are saved)."""
        for job in dict.fromkeys(jobs):
            if job not in self.known and (saved := self.saved(job)) is not None:
                self.known[job] = saved
                self.runs.append(self._run_entry(job, saved, reused=True))
        missing = [job for job in dict.fromkeys(jobs) if job not in self.known]
        room = len(missing) if self.budget is None else max(self.budget - self.new_runs, 0)
        batch = missing[:room]
        if batch:
            for job, outcome in zip(batch, self.runner(batch, self.root / "results"), strict=True):
                self.new_runs += 1
                self.known[job] = outcome
                self._save(job, outcome)
                self.runs.append(self._run_entry(job, outcome, reused=False))
        if len(batch) < len(missing):
            raise BudgetSpent(f"the budget of {self.budget} runs is spent")
        return [self.known[job] for job in jobs]

    def _save(self, job: Job, outcome: Outcome) -> None:
        record = {"commit": job.tree.sha, "tree": job.tree.name, "suite": job.suite, "options": list(job.options),
                  "harness": self.harness, "error": outcome.error, "wall_s": round(outcome.wall_s, 1),
                  "result": str(outcome.result.relative_to(self.root)) if outcome.ok else None}
        path = self._record_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)

    @staticmethod
    def _run_entry(job: Job, outcome: Outcome, reused: bool) -> dict:
        return {"commit": job.tree.sha, "tree": job.tree.name, "suite": job.suite_key, "reused": reused,
                "wall_s": 0.0 if reused else round(outcome.wall_s, 1), "error": outcome.error}
