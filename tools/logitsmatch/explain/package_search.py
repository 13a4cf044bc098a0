"""Step 3 of an explanation, which packages: delta debugging over groups of the differing packages.

A group is a distribution with what its metadata requires and the baseline lacks (``explain.environments``); each
intermediate environment is composed by overlay, what cannot move alone moves with what it needs, and a
configuration that cannot start is unresolved, never evidence. The culprit is stated with the two runs that
prove it.
"""

from __future__ import annotations

from logitsmatch.errors import BadInput
from logitsmatch.explain import environments as envs
from logitsmatch.explain.bisect import UNRESOLVED, isolate
from logitsmatch.explain.suite_runs import Run, SuiteRuns
from logitsmatch.log import logger


class PackageSearch(SuiteRuns):
    """Which group(s) of differing packages reproduce the candidate, and whether a culprit group's lead is needed."""

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


def group_record(group: envs.Group) -> dict:
    return {"lead": group.lead, "members": list(group.members), "reasons": dict(group.reasons)}
