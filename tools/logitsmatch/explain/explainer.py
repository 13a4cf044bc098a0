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
this project's ``tools/`` first on PYTHONPATH, so both sides run the same harness code
(``explain.suite_runs``). Steps 3 to 5 are ``explain.package_search``, ``explain.commit_search``
and ``explain.first_module``; this module drives them and states the report.
"""

from __future__ import annotations

import time

from logitsmatch.errors import BadInput
from logitsmatch.explain import environments as envs
from logitsmatch.explain.bisect import search_bound
from logitsmatch.explain.commit_search import CommitSearch
from logitsmatch.explain.first_module import FirstModule
from logitsmatch.explain.harness import check_harness_differences, harness_differences
from logitsmatch.explain.package_search import PackageSearch, group_record
from logitsmatch.judge.policy import Policy
from logitsmatch.log import logger


class Explainer(PackageSearch, CommitSearch, FirstModule):
    """One explanation in progress: the five steps share its runs, so an environment that two steps
    need (the same interpreter, overlays, suite and harness code) runs once, the documents it loaded,
    and the progress estimate the log shows. ``explain`` drives the steps and returns the report."""

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


def _judgement(policy: Policy) -> str:
    if policy.mode.value == "deterministic":
        return "bit-exact (deterministic mode): any change of any logprob or token counts"
    return (f"{policy.mode.value} mode (abs_tol {policy.abs_tol:g}, rel_tol {policy.rel_tol:g}): changes within "
           "it do not count")
