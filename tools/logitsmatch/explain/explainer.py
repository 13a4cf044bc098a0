"""Explain a drift between two environments: harness inputs, packages, commit, first moving module.

1. Run the suite (with ``--capture``) on both sides and judge them with the one comparator
   (bit-exact by default). Equal: "no drift", nothing is bisected.
2. Is it logitsmatch? Compare what the harness fed both runs (loaded-weights digests, the
   synthetic checkpoint, the plan, the stand-ins, the adapter and its decisions). When the
   loaded weights differ, run the candidate's packages on the baseline's checkpoint: if that
   gives the baseline's result, the weights alone explain the drift (a harness drift).
3. Which packages: delta debugging (``explain.bisect.isolate``) over groups of the differing
   packages (a distribution with what its metadata requires and the baseline lacks), each
   intermediate environment composed by overlay (``explain.environments``); what cannot move
   alone moves with what it needs, and the report says why. A configuration that cannot start
   is unresolved, never evidence; the culprit is stated with the two runs that prove it.
4. Which commit: when the culprit is one package with a git source, ``git bisect`` over the
   commits between the two refs, each commit's tree installed over the baseline environment
   (``explain.gitsource``); commits that do not install or run are skipped and listed.
5. Which module: ``judge.localize`` on the captures of the two boundary environments.

Every suite run is a ``logitsmatch run`` subprocess in that environment's interpreter with
this project's ``tools/`` first on PYTHONPATH, so both sides run the same harness code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.explain import environments as envs
from logitsmatch.explain import gitsource
from logitsmatch.explain.bisect import UNRESOLVED, first_bad, isolate, search_bound
from logitsmatch.explain.harness import check_harness_differences, harness_differences
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.judge.policy import Policy
from logitsmatch.log import logger

CAPTURE_STEPS = 3


@dataclass
class Settings:
    """What one explanation compares and how: the suite, the two sides, the judgement, where runs go."""

    project: Path
    suite: str
    toolchain: str  # the label runs carry (``logitsmatch run --toolchain``); numerics do not depend on it
    baseline: envs.Side
    candidate: envs.Side
    policy: Policy
    workdir: Path
    cache: Path
    sources: dict[str, str] = field(default_factory=dict)  # package -> git checkout
    candidate_commit: tuple[str, str, str] | None = (
        None  # (package, gitdir, ref): the candidate is baseline + that tree
    )
    timeout_s: float | None = None


@dataclass
class Run:
    """One suite run in one environment."""

    index: int  # 1-based, in the order the explanation ran them
    label: str  # the run's candidate label, derived from what it runs (reused when equal)
    description: str  # which environment, in words: "baseline", "move numpy (with torch)", a commit
    moved_to_candidate: list[str]  # the packages at the candidate's version in this environment
    side: envs.Side
    result: Path | None  # the result file; None when the run failed
    error: str | None
    wall_s: float
    reused: bool
    outcome: str | None = None  # once judged: good (the baseline's result), bad (the candidate's), other, unresolved
    comparisons: dict = field(default_factory=dict)  # "vs_baseline" / "vs_candidate": what the comparator found
    report_details: dict = field(default_factory=dict)  # step-specific facts for the report (checkpoint, commit)

    @property
    def ok(self) -> bool:
        return self.result is not None

    def provenance(self) -> dict:
        return json.loads(paths.provenance_path(self.result).read_text()) if self.ok else {}

    def inputs(self) -> dict:
        path = paths.inputs_path(self.result) if self.ok else None
        return json.loads(path.read_text()) if path and path.is_file() else {}

    def to_dict(self) -> dict:
        provenance = self.provenance()
        inputs = provenance.get("harness_inputs") or {}
        return {
            "run": self.index,
            "what": self.description,
            "moved_to_candidate": self.moved_to_candidate,
            "label": self.label,
            "python": self.side.python,
            "pythonpath": list(self.side.pythonpath),
            "outcome": self.outcome,
            "result": dict(self.comparisons),
            "error": self.error,
            "wall_s": round(self.wall_s, 1),
            "reused": self.reused,
            "packages": provenance.get("packages"),
            "megatron_core": inputs.get("megatron_core"),
            "loaded_weights_digest": inputs.get("loaded_weights_digest"),
            "result_file": str(self.result) if self.ok else None,
            **self.report_details,
        }


class Explainer:
    """One explanation in progress: the five steps share its runs, so an environment that two steps
    need (the same interpreter, overlays, suite and harness code) runs once, the documents it loaded,
    and the progress estimate the log shows. ``explain`` drives the steps and returns the report."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.runs: list[Run] = []
        self.started = time.monotonic()
        self.bound = 2  # at most this many runs: the two sides, then what each step states (``extend``)
        self.bound_notes: list[str] = []  # why the bound grew beyond what the groups give
        self.harness_digest = _harness_digest(settings.project)
        self.documents: dict[str, dict] = {}  # run label -> its result, loaded once
        self.last_localization = None  # step 5's result, for the plot (--png)

    # --- running ----------------------------------------------------------------------------
    def progress(self, description: str) -> None:
        step = len(self.runs) + 1
        if step > self.bound:  # a step no rule counted: said, not hidden
            self.extend(step - self.bound, "a step the bound did not count")
        so_far = time.monotonic() - self.started
        logger.info(f"step {step} of at most {self.bound} ({so_far:.0f} s so far): {description}")

    def extend(self, runs: int, why: str) -> None:
        """The bound grows by ``runs``, and the log says why in one line."""
        self.bound += runs
        self.bound_notes.append(f"+{runs}: {why}")
        logger.info(f"  at most {self.bound} runs now (+{runs}): {why}")

    def run(self, side: envs.Side, description: str, moved_to_candidate: list[str],
            checkpoint: str | None = None) -> Run:
        key = {"python": side.python, "pythonpath": list(side.pythonpath), "suite": self.settings.suite,
               "checkpoint": checkpoint, "harness": self.harness_digest, "capture": CAPTURE_STEPS}
        label = "explain-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        for earlier in self.runs:
            if earlier.label == label:
                return earlier
        results_root = self.settings.workdir / "results"
        result = paths.result_path(self.settings.suite, "cpu", label, results_root)
        key_file = result.with_name("explain_key.json")
        self.progress(description)
        started = time.monotonic()
        if result.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
            run = Run(len(self.runs) + 1, label, description, moved_to_candidate, side, result, None, 0.0, True)
            logger.info(f"  reused the earlier run {label} (same environment, suite and harness)")
        else:
            command = [side.python, "-m", "logitsmatch", "run", self.settings.suite,
                       "--toolchain", self.settings.toolchain, "--candidate", label, "--no-compare",
                       "--capture", str(CAPTURE_STEPS)]
            if checkpoint:
                command += ["--checkpoint", checkpoint]
            if self.settings.timeout_s:
                command += ["--timeout", str(self.settings.timeout_s)]
            env = side.env(extra_path=(str(self.settings.project / "tools"),))
            env.update(LOGITSMATCH_RESULTS=str(results_root), LOGITSMATCH_ROOT=str(self.settings.project))
            completed = subprocess.run(command, cwd=self.settings.project, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            if completed.returncode == 0 and result.is_file():
                key_file.write_text(json.dumps(key, sort_keys=True))
                run = Run(len(self.runs) + 1, label, description, moved_to_candidate, side, result, None, wall, False)
            else:
                run = Run(len(self.runs) + 1, label, description, moved_to_candidate, side, None,
                          f"exit {completed.returncode} after {wall:.0f} s: "
                          + first_error_line(completed.stderr or completed.stdout), wall, False)
        self.runs.append(run)
        logger.info(f"  {'ran' if not run.reused else 'took'} {label} in {run.wall_s:.0f} s"
                    + (f": FAILED ({run.error})" if run.error else ""))
        return run

    def judge(self, run: Run, baseline: Run | None, candidate: Run | None) -> str:
        """Classify a run against the two sides: good (the baseline's result), bad (the candidate's),
        other (neither), unresolved (it did not finish: no evidence for either side)."""
        if not run.ok:
            run.outcome = UNRESOLVED
            return run.outcome
        document = self.document(run)
        same = {}
        for name, side in (("baseline", baseline), ("candidate", candidate)):
            if side is None or not side.ok:
                continue
            result = compare(self.document(side), document, self.settings.policy)
            same[name] = result.passed
            run.comparisons[f"vs_{name}"] = {"tokens_agree": result.tokens_agree,
                                             "max_abs_delta": json_float(result.max_abs_delta),
                                             "over_tolerance": result.n_over_tolerance, "same": result.passed}
        if same.get("baseline"):
            run.outcome = "good"
        elif same.get("candidate"):
            run.outcome = "bad"
        else:
            run.outcome = "other"
        return run.outcome

    def document(self, run: Run) -> dict:
        if run.label not in self.documents:
            self.documents[run.label] = load_golden(run.result)
        return self.documents[run.label]

    # --- the explanation --------------------------------------------------------------------------
    def explain(self) -> dict:
        s = self.settings
        logger.info(f"resolving both environments ({s.baseline.python} | {s.candidate.python})")
        base_env, cand_env = envs.resolve(s.baseline), envs.resolve(s.candidate)
        changes = envs.diff(base_env, cand_env)
        changed = [change.name for change in changes]
        report: dict = {
            "suite": s.suite,
            "judgement": _judgement(s.policy),
            "baseline": {
                "python": s.baseline.python,
                "pythonpath": list(s.baseline.pythonpath),
                "environment": base_env.listing(),
            },
            "candidate": {
                "python": s.candidate.python,
                "pythonpath": list(s.candidate.pythonpath),
                "environment": cand_env.listing(),
            },
            "differing_packages": [{"name": c.name, "baseline": c.baseline, "candidate": c.candidate} for c in changes],
            "harness_differences": [],
            "harness_drift": False,
            "culprits": [],
            "moved_together": {},
            "commit": None,
            "commit_search": None,
            "first_module": None,
            "localization": None,
        }
        logger.info(f"{len(changes)} differing: " + (", ".join(c.label() for c in changes) or "none"))
        groups = envs.requirement_groups(base_env, cand_env, changes)
        report["groups"] = [group_record(group) for group in groups]
        for group in groups:
            if len(group.members) > 1:
                logger.info(f"group {group.label()}: " + "; ".join(why for _, why in group.reasons))
        self.bound = 2 + search_bound(len(groups))
        logger.info(f"{len(groups)} group(s): at most {self.bound} runs (both sides and 2*ceil(log2 {len(groups)}) "
                    "for one culprit group; each further step says what it adds)")
        baseline = self.run(s.baseline, "baseline", [])
        candidate = self.run(s.candidate, "candidate", changed)
        for run in (baseline, candidate):
            if not run.ok:
                raise BadInput(f"the {run.description} does not run the suite: {run.error}")
        self.judge(candidate, baseline, None)
        baseline.outcome = "good"
        candidate.outcome = "good" if candidate.comparisons["vs_baseline"]["same"] else "bad"
        baseline.comparisons["vs_candidate"] = candidate.comparisons["vs_baseline"]
        report["harness_differences"] = harness_differences(baseline, candidate)
        if candidate.comparisons["vs_baseline"]["same"]:
            report["verdict"] = "no drift"
            report["runs"] = [run.to_dict() for run in self.runs]
            return self._finish(report)
        report["verdict"] = "drift"

        # 2. the harness
        weights_differ = any(d["what"] == "loaded weights" for d in report["harness_differences"])
        checkpoint = baseline.inputs().get("checkpoint_dir")
        if weights_differ and checkpoint:
            self.extend(1, "the loaded weights differ: the candidate's packages run once on the baseline's checkpoint")
            swap = self.run(
                s.candidate, "candidate's packages on the baseline's checkpoint", changed, checkpoint=checkpoint
            )
            self.judge(swap, baseline, candidate)
            swap.report_details["checkpoint"] = checkpoint
            report["weights_swap"] = {"run": swap.index, "outcome": swap.outcome}
            if swap.outcome == "good":
                report["harness_drift"] = True
                report["verdict"] = "harness drift"

        # 3. packages
        last_good = baseline
        if len(groups) > 1:
            search = self.packages(base_env, cand_env, changes, groups, baseline, candidate)
        else:
            search = {"culprit_groups": [group_record(group) for group in groups], "moved_together": {},
                      "proof": {"alone": {"run": candidate.index, "outcome": "bad"},
                                "without": {"run": baseline.index, "outcome": "good"}, "proven": True},
                      "unresolved": [], "notes": [], "ties": {}, "boundary": candidate}
        first_bad_run = search.pop("boundary")
        report.update(search)
        culprit_groups = [group for group in groups if group.lead in {g["lead"] for g in report["culprit_groups"]}]
        if len(culprit_groups) == 1 and len(culprit_groups[0].members) > 1:
            report["within_group"] = self.requirements_alone(culprit_groups[0], base_env, cand_env, set(changed),
                                                              (baseline, candidate))
        check_harness_differences(report["harness_differences"], (baseline, candidate), self.runs)
        report["culprits"] = [name for group in report["culprit_groups"] for name in group["members"]]

        # 4. commit
        leads = [group["lead"] for group in report["culprit_groups"]]
        commit_package = leads[0] if len(leads) == 1 else None
        if commit_package and (s.candidate_commit or commit_package in s.sources):
            search = self.commits(commit_package, base_env, cand_env, baseline, first_bad_run)
            report["commit_search"] = search
            report["commit"] = search.get("commit")
            if search.get("boundary"):
                last_good, first_bad_run = search["boundary"]
                del search["boundary"]

        # 5. module
        report["localization_runs"] = [last_good.index, first_bad_run.index]
        report.update(self.localization(last_good, first_bad_run))
        report["runs"] = [run.to_dict() for run in self.runs]
        return self._finish(report)

    def _finish(self, report: dict) -> dict:
        report["bound"] = {"runs": self.bound, "notes": self.bound_notes}
        report["counts"] = {
            "suite_runs": sum(1 for r in self.runs if not r.reused),
            "reused_runs": sum(1 for r in self.runs if r.reused),
            "environments": len(self.runs),
        }
        report["elapsed_s"] = round(time.monotonic() - self.started, 1)
        return report

    def packages(self, base_env, cand_env, changes, groups: list[envs.Group], baseline: Run, candidate: Run) -> dict:
        """Delta debugging over ``groups``: which group(s) reproduce the candidate, the two runs that
        prove it, the configurations that could not start, and what moved along by a tie."""
        changed = {change.name for change in changes}
        by_lead = {group.lead: group for group in groups}
        moved_with: dict[str, str] = {}
        by_closure: dict[frozenset, Run] = {frozenset(changed): candidate, frozenset(): baseline}

        def members(config: frozenset[str]) -> set[str]:
            return {name for lead in config for name in by_lead[lead].members}

        def closed(config: frozenset[str]) -> set[str]:
            full, reasons = envs.closure(base_env, cand_env, members(config), changed)
            for name, why in reasons.items():
                moved_with.setdefault(name, why)
            return full

        def expand(config: frozenset[str]) -> frozenset[str]:
            full = closed(config)
            return frozenset(group.lead for group in groups if set(group.members) & full)

        def test(config: frozenset[str]) -> str:
            full = closed(config)
            key = frozenset(full)
            if key not in by_closure:
                described = ", ".join(by_lead[lead].label() for lead in sorted(config))
                extra = sorted(full - members(config))
                description = "move " + described + (f" (with {', '.join(extra)})" if extra else "")
                try:
                    side = envs.compose(base_env, cand_env, set(full), self.settings.cache, "+".join(sorted(full)))
                except BadInput as exc:
                    logger.info(f"  cannot compose {description}: {exc}")
                    unresolved.append({"run": None, "moved": sorted(full), "what": description, "error": str(exc)})
                    return UNRESOLVED
                run = self.run(side, description, sorted(full))
                self.judge(run, baseline, candidate)
                if run.outcome == UNRESOLVED:
                    unresolved.append({"run": run.index, "moved": sorted(full), "what": description,
                                       "error": run.error})
                by_closure[key] = run
            return by_closure[key].outcome

        unresolved: list[dict] = []
        found = isolate([group.lead for group in groups], test, expand, lambda why, runs: self.extend(runs, why))

        def proof(config: frozenset[str]) -> dict:
            full = closed(config)
            if config == found.without and full & members(found.alone):
                return {"run": None, "outcome": None, "moved": sorted(full), "impossible": "a tie takes it along"}
            run = by_closure.get(frozenset(full))
            return {"run": run.index if run else None, "outcome": found.outcomes.get(config), "moved": sorted(full)}

        culprit_members = closed(found.alone)
        return {"culprit_groups": [group_record(by_lead[lead]) for lead in found.culprits],
                "moved_together": {name: why for name, why in moved_with.items()
                                   if name in culprit_members and name not in members(found.alone)},
                "proof": {"alone": proof(found.alone), "without": proof(found.without), "proven": found.proven},
                "ties": dict(moved_with),
                "unresolved": unresolved, "notes": found.notes,
                "boundary": by_closure.get(frozenset(culprit_members), candidate)}

    def requirements_alone(self, group: envs.Group, base_env, cand_env, changed: set[str], sides: tuple[Run, Run]):
        """The culprit group's requirements moved without its lead: whether the lead is needed, and a run that
        tells a harness input the requirements carry (triton's kernels) from the lead's numerics."""
        companions = set(group.members) - {group.lead}
        full, _ = envs.closure(base_env, cand_env, companions, changed)
        if group.lead in full:
            return {"run": None, "outcome": None, "moved": sorted(full),
                    "why": f"its requirements cannot move without {group.lead} (a tie takes it along)"}
        if len(self.runs) >= self.bound:  # the search left no room for it within the bound
            self.extend(
                1, f"the culprit group's requirements moved without {group.lead}: is {group.lead} itself needed"
            )
        try:
            side = envs.compose(base_env, cand_env, full, self.settings.cache, "+".join(sorted(full)))
        except BadInput as exc:
            return {"run": None, "outcome": UNRESOLVED, "moved": sorted(full), "why": str(exc)}
        run = self.run(side, f"move {group.lead}'s requirements without it", sorted(full))
        self.judge(run, *sides)
        return {"run": run.index, "outcome": run.outcome, "moved": sorted(full), "why": run.error}

    def commits(self, package: str, base_env, cand_env, baseline: Run, moved_alone: Run) -> dict:
        """``moved_alone``: the run of the baseline with only ``package`` at the candidate's version."""
        s = self.settings
        gitdir = (
            s.candidate_commit[1] if s.candidate_commit and s.candidate_commit[0] == package else s.sources[package]
        )
        base_entry, cand_entry = base_env.distributions.get(package) or {}, cand_env.distributions.get(package) or {}
        good_ref = base_entry.get("commit") or gitsource.tag_for(package, base_env.version(package) or "")
        bad_ref = cand_entry.get("commit") or gitsource.tag_for(package, cand_env.version(package) or "")
        candidate = moved_alone
        try:
            commits = gitsource.commits_between(gitdir, good_ref, bad_ref)
        except BadInput as exc:
            return {"package": package, "problem": str(exc), "commit": None}
        helper = megatron_cpp_helper(base_env)
        search: dict = {"package": package, "source": str(gitdir), "good": good_ref, "bad": bad_ref,
                        "commits_between": len(commits) - 1, "tested": [], "skipped": [], "installs": []}
        logger.info(f"{package}: {len(commits) - 1} commits from {good_ref} to {bad_ref} in {gitdir}")
        self.extend(math.ceil(math.log2(max(len(commits) - 1, 1))) + 2,
                    f"{package} has a git source: {len(commits) - 1} commits from {good_ref} to {bad_ref}, bisected "
                    "(both ends as trees and ceil(log2 c) commits)")
        runs: dict[str, Run] = {}

        def test(sha: str) -> str:
            try:
                folder, record = gitsource.install_commit(package, gitdir, sha, s.cache, base_env.side.python, helper)
            except BadInput as exc:
                search["skipped"].append({"sha": sha, "why": str(exc)})
                return UNRESOLVED
            search["installs"].append(record)
            side = envs.Side(f"{package}@{sha[:10]}", base_env.side.python, (str(folder), *base_env.side.pythonpath))
            subject = next((c.subject for c in commits if c.sha == sha), "")
            run = self.run(side, f"{package} at {sha[:10]} '{subject}'", [package])
            self.judge(run, baseline, candidate)
            run.report_details["commit"] = sha
            runs[sha] = run
            search["tested"].append({"sha": sha, "subject": subject, "outcome": run.outcome, "run": run.index})
            if run.outcome == UNRESOLVED:
                search["skipped"].append({"sha": sha, "why": run.error})
            return run.outcome

        # The two ends are run as trees too: the good ref must give the baseline's result, the bad one the candidate's
        # (when the candidate's package is that very tree, its run is the end's).
        start = test(commits[0].sha)
        if start == UNRESOLVED:  # e.g. the merge base of two release branches needs what the environment lacks
            first, start = self.first_runnable(commits, test, search)
            commits = commits[first:]
        end = (
            _reuse_end(candidate, commits[-1].sha, runs, search)
            if cand_entry.get("commit") == commits[-1].sha
            else test(commits[-1].sha)
        )
        if start != "good" or end != "bad":
            search["problem"] = (f"the ends do not reproduce the two sides ({good_ref}: {start}, {bad_ref}: {end}); "
                                 "no commit is blamed")
            search["commit"] = None
            return search
        found, skipped = first_bad([c.sha for c in commits], test)
        if found is None:
            search["problem"] = "only skipped commits lie between the last good and the first bad commit"
            search["commit"] = None
            return search
        position = next(i for i, c in enumerate(commits) if c.sha == found)
        previous = commits[position - 1].sha
        search["commit"] = {"package": package, "sha": found, "subject": commits[position].subject,
                            "files": gitsource.files_touched(gitdir, found, gitsource.PACKAGE_FOLDERS.get(package)),
                            "all_files": gitsource.files_touched(gitdir, found)}
        search["boundary"] = (runs.get(previous, baseline), runs[found])
        return search

    def first_runnable(self, commits: list, test, search: dict) -> tuple[int, str]:
        """The start cannot run here: probe forward at offsets 1, 2, 4, ... (as git bisect skips) until a commit
        runs, then bisect between the last probe that could not run and it for the first commit that runs (commits
        that cannot run are taken to be a prefix: the environment lacks what they need until one stops needing it).
        The search starts there. Returns its index and outcome (UNRESOLVED: none ran)."""
        why = search["skipped"][-1]["why"] if search["skipped"] else "it did not run"
        offsets = [2**k for k in range(max(len(commits) - 2, 1).bit_length()) if 2**k < len(commits) - 1]
        self.extend(len(offsets), f"the start {commits[0].short} cannot run here ({why[:120]}); probing forward at "
                                  f"offsets {', '.join(map(str, offsets))} for a commit that runs")
        unrunnable, found, outcome = [commits[0].short], None, UNRESOLVED
        for offset in offsets:
            outcome = test(commits[offset].sha)
            if outcome != UNRESOLVED:
                found = offset
                break
            unrunnable.append(commits[offset].short)
        if found is None:
            return 0, UNRESOLVED
        low = found // 2 if found > 1 else 0  # the last probe that could not run
        if found - low > 1:
            self.extend(math.ceil(math.log2(found - low)), f"{commits[found].short} runs and {commits[low].short} "
                                                          "does not: bisecting between them for the first that runs")
        while found - low > 1:
            middle = (low + found) // 2
            tried = test(commits[middle].sha)
            if tried == UNRESOLVED:
                low = middle
                unrunnable.append(commits[middle].short)
            else:
                found, outcome = middle, tried
        search["start_unrunnable"] = {
            "from": commits[0].sha, "commits": found, "first_runnable": commits[found].sha, "why": why,
            "note": f"the first {found} commit(s) from {commits[0].short} cannot run here ({why[:200]}; tried: "
            f"{', '.join(unrunnable)}); the search starts at {commits[found].short} "
            f"'{commits[found].subject}', the first that runs",
        }
        return found, outcome

    def localization(self, good: Run, bad: Run) -> dict:
        """The first moving module between the boundary runs: aligned step by step, or, where their steps hold
        different tokens (another batch schedule, e.g. an idle expert-parallel engine's steps), row by row by prefix."""
        from logitsmatch.judge.localize import localize, localize_by_prefix, read_capture

        try:
            captures = read_capture(paths.capture_dir(good.result)), read_capture(paths.capture_dir(bad.result))
            result = localize(*captures)
        except BadInput as exc:
            return {"localization": {"problem": str(exc)}, "first_module": None}
        steps_problem, aligned_by = result.schedule_problem, "steps"
        if steps_problem:
            try:
                result, aligned_by = localize_by_prefix(*captures), "prefixes"
            except BadInput as exc:
                steps_problem += f"; not aligned by prefix either: {exc}"
        first = result.first_bitwise
        self.last_localization = result
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
        return {"localization": localization, "first_module": module}


def group_record(group: envs.Group) -> dict:
    return {"lead": group.lead, "members": list(group.members), "reasons": dict(group.reasons)}


# the last line of a traceback (ImportError: ...), as a rank prints it too ([rank0]: ImportError: ...)
RAISED = re.compile(r"^(\[rank\d+\]:\s*)?(\w+\.)*\w+(Error|Exception)\b")
SAYS_ERROR = re.compile(r"\b(error|failed)\b", re.IGNORECASE)


def first_error_line(output: str) -> str:
    """The line that names what went wrong: the exception a traceback ends with, else the first line
    that says error or failed, else the last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    raised = [line for line in lines if RAISED.match(line)]
    said = next((line for line in lines if SAYS_ERROR.search(line)), None)
    return (raised[-1] if raised else said or (lines[-1] if lines else "no output"))[:300]


def _reuse_end(candidate: Run, sha: str, runs: dict, search: dict) -> str:
    runs[sha] = candidate
    search["tested"].append(
        {"sha": sha, "subject": "(the candidate itself)", "outcome": candidate.outcome, "run": candidate.index}
    )
    return candidate.outcome


def megatron_cpp_helper(env: envs.Environment) -> Path | None:
    """The compiled dataset helper of ``env``'s megatron-core, copied beside a commit's exported tree."""
    entry = env.distributions.get("megatron-core")
    if not entry:
        return None
    for relative in entry["files"]:
        if relative.startswith("megatron/core/datasets/helpers_cpp") and relative.endswith(".so"):
            return Path(entry["location"]) / relative
    return None


def _judgement(policy: Policy) -> str:
    if policy.mode.value == "deterministic":
        return "bit-exact (deterministic mode): any change of any logprob or token counts"
    return (f"{policy.mode.value} mode (abs_tol {policy.abs_tol:g}, rel_tol {policy.rel_tol:g}): changes within "
           "it do not count")


# What a suite run executes of the harness (a change here invalidates earlier runs; explain's own code does not).
RUN_CODE = ("*.py", "rank/*.py", "run/*.py", "cli/run.py", "flows/__init__.py", "flows/run_suite.py",
            "flows/run_report.py")


def _harness_digest(project: Path) -> str:
    digest = hashlib.sha256()
    package = project / "tools" / "logitsmatch"
    for path in sorted({path for pattern in RUN_CODE for path in package.glob(pattern)}):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
