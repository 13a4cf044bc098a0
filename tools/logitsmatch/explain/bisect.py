"""Search strategies for explain, independent of what a test run is.

* ``isolate``: which units of change (groups of packages) reproduce the candidate's result, and
  the two runs that prove it. First a bisection for one culprit: each level tests one half
  alone; a resolved outcome narrows the suspects to what that configuration moved ("bad": the
  candidate's result) or to what it did not (any other resolved result). A configuration that
  cannot start is *unresolved* (Zeller's "?"): no evidence either way; the same question is asked
  by the next configuration of the level (for each part: the part alone, everything but the other
  suspects, everything but the part; finer parts when a whole level is unresolved), so each
  unresolved one costs one further run. A configuration whose ties move none or all of the
  suspects is never run: no outcome of it could narrow them. Then the
  proof: the culprit alone must give the candidate's result and everything else without it the
  baseline's. With g units and one culprit that is at most ``search_bound(g)`` = 2*ceil(log2 g)
  runs beyond the two sides (ceil(log2 g) levels and at most two proof runs), plus one per
  unresolved configuration. When the proof fails (more than one unit moves the result, or they
  interfere), Zeller's ddmin over all units finds a 1-minimal set (``ddmin``; unresolved
  outcomes never reduce), at most (g^2 + 3g)/2 further runs.
* ``first_bad``: ``git bisect`` over a commit list whose first element is known good and
  last known bad; a commit that cannot be tested is skipped (its neighbours are tried) and
  listed. ceil(log2 c) tests for c commits when none is skipped.

``test`` returns ``"bad"`` (the candidate's result), ``"good"`` (the baseline's), ``"other"``
(neither) or ``"unresolved"`` (could not start or run); only ``"bad"`` counts as reproducing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

UNRESOLVED = "unresolved"


def search_bound(units: int) -> int:
    """Runs ``isolate`` spends on ``units`` units with one culprit and no unresolved configuration."""
    return 2 * math.ceil(math.log2(units)) if units > 1 else 0


def fallback_bound(units: int) -> int:
    """Runs ddmin may spend on ``units`` units at worst (Zeller: (n^2 + 3n) / 2)."""
    return (units * units + 3 * units) // 2


@dataclass
class Isolation:
    """What the search found and the configurations that prove it."""

    culprits: list[str]
    alone: frozenset[str] | None = None  # the culprits alone: gave the candidate's result
    without: frozenset[str] | None = None  # everything else without the culprits: gave the baseline's
    outcomes: dict[frozenset[str], str] = field(default_factory=dict)  # the two sides, then every configuration tested
    unresolved: list[frozenset[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # where the one-culprit bound did not hold, and why

    @property
    def proven(self) -> bool:
        return self.outcomes.get(self.alone) == "bad" and self.outcomes.get(self.without) == "good"


def isolate(units: Sequence[str], test: Callable[[frozenset[str]], str],
            expand: Callable[[frozenset[str]], frozenset[str]] = lambda config: config,
            announce: Callable[[str, int], None] = lambda why, runs: None) -> Isolation:
    """The minimal set of ``units`` that the runs prove reproduces the candidate's result.

    ``test(config)`` runs the configuration with ``config`` moved to the candidate; all units moved
    is the candidate ("bad"), none the baseline ("good"), neither is run. ``expand(config)``: the
    units that configuration really moves (ties may take more along). ``announce(why, runs)`` is
    told, in one line, whenever the search must spend ``runs`` runs beyond ``search_bound``.
    A configuration is never tested twice.
    """
    everything = frozenset(units)
    found = Isolation([])

    found.outcomes[frozenset()], found.outcomes[everything] = "good", "bad"  # the two sides, run before

    def run(config: frozenset[str]) -> str:
        if config not in found.outcomes:
            found.outcomes[config] = test(config)
            if found.outcomes[config] == UNRESOLVED:
                found.unresolved.append(config)
                announce(f"configuration {_names(config)} could not start: no evidence, one more run asks the same "
                         "question", 1)
        return found.outcomes[config]

    suspects, parts = list(units), 2
    while len(suspects) > 1:
        narrowed = _narrow(suspects, parts, everything, run, expand)
        if narrowed is not None:
            suspects, parts = narrowed, 2
        elif parts < len(suspects):
            parts = min(len(suspects), 2 * parts)
        else:
            found.notes.append(f"{_names(frozenset(suspects))} cannot be split: no configuration of them that starts "
                               "tells them apart")
            break
    found.culprits = suspects
    found.alone, found.without = frozenset(suspects), everything - frozenset(suspects)
    tied_back = expand(found.without) & found.alone
    if tied_back and run(found.alone) == "bad":
        found.notes.append(f"everything else cannot move without {_names(tied_back)}: a tie takes it along, "
                           "so only the first proof run exists")
        return found
    if run(found.alone) == "bad" and run(found.without) == "good":
        return found
    why = (f"no proof for one culprit: {_names(found.alone)} alone gives {run(found.alone)} (the candidate's result "
           f"would be bad) and everything else {run(found.without)} (the baseline's would be good)")
    announce(why + f"; ddmin over all {len(everything)} groups", fallback_bound(len(everything)))
    found.notes.append(why)
    found.culprits = ddmin(list(units), run, expand)
    found.alone, found.without = frozenset(found.culprits), everything - frozenset(found.culprits)
    run(found.without)
    return found


def _narrow(suspects: list[str], parts: int, everything: frozenset[str], run, expand) -> list[str] | None:
    """One level: the suspects split in ``parts``; for each part, the part alone, everything but the other
    suspects, everything but the part, until one resolved outcome narrows the suspects (None: none does).
    A configuration that moves, with its ties, some but not all suspects always narrows them: "bad" to
    those it moved, any other resolved outcome to the rest; one that moves none or all is never run."""
    size = math.ceil(len(suspects) / parts)
    within = frozenset(suspects)
    for start in range(0, len(suspects), size):
        part = frozenset(suspects[start:start + size])
        for config in (part, everything - (within - part), everything - part):
            moved = expand(config)
            if not moved & within or within <= moved:
                continue
            outcome = run(config)
            if outcome != UNRESOLVED:
                return [u for u in suspects if (u in moved) == (outcome == "bad")]
    return None


def ddmin(units: list[str], run: Callable[[frozenset[str]], str],
          expand: Callable[[frozenset[str]], frozenset[str]] = lambda config: config) -> list[str]:
    """Zeller's ddmin: a 1-minimal subset of ``units`` (all of which give "bad") that still gives "bad".
    Only "bad" reduces, to what the configuration really moved (``expand``); "good", "other" and
    unresolved outcomes refine the split instead."""
    current, parts = list(units), 2

    def reduces(config: list[str]) -> list[str] | None:
        if run(frozenset(config)) != "bad":
            return None
        moved = expand(frozenset(config))
        kept = [u for u in current if u in moved]
        return kept if len(kept) < len(current) else None

    while len(current) >= 2:
        size = math.ceil(len(current) / parts)
        subsets = [current[i:i + size] for i in range(0, len(current), size)]
        reduced = next((kept for s in subsets if (kept := reduces(s))), None)
        if reduced is not None:
            current, parts = reduced, 2
            continue
        complements = [[u for u in current if u not in s] for s in subsets]
        reduced = next((kept for c in complements if len(subsets) > 2 and (kept := reduces(c))), None)
        if reduced is not None:
            current, parts = reduced, max(parts - 1, 2)
            continue
        if parts >= len(current):
            break
        parts = min(len(current), 2 * parts)
    return current


def _names(config: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(config)) + "}"


def first_bad(commits: Sequence[str], test: Callable[[str], str]) -> tuple[str | None, list[str]]:
    """The first commit of ``commits`` (oldest first; [0] good, [-1] bad) whose test is ``"bad"``,
    and the commits skipped. None when skipped commits hide the boundary."""
    good, bad = 0, len(commits) - 1
    skipped: list[str] = []
    results: dict[int, str] = {}
    while bad - good > 1:
        untested = [index for index in range(good + 1, bad) if index not in results]
        if not untested:
            return None, skipped  # only skipped commits lie between the last good and the first bad
        middle = (good + bad) // 2
        index = min(untested, key=lambda i: (abs(i - middle), i))
        outcome = test(commits[index])
        results[index] = outcome
        if outcome == UNRESOLVED:
            skipped.append(commits[index])
        elif outcome == "bad":
            bad = index
        else:
            good = index
    return commits[bad], skipped
