"""Step 4 of an explanation, which commit: ``git bisect`` over the commits between the culprit package's two refs.

Taken when the culprit is one package with a git source: each commit's tree is installed over the baseline
environment (``explain.gitsource``); commits that do not install or run are skipped and listed, and a start that
cannot run moves forward to the first commit that does.
"""

from __future__ import annotations

import math
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.explain import environments as envs
from logitsmatch.explain import gitsource
from logitsmatch.explain.bisect import UNRESOLVED, first_bad
from logitsmatch.explain.suite_runs import Run, SuiteRuns
from logitsmatch.log import logger


class CommitSearch(SuiteRuns):
    """The first commit of one package that gives the candidate's result, with the two runs at its boundary."""

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
