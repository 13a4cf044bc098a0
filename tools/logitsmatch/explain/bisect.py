"""Search strategies for explain, independent of what a test run is.

* ``isolate``: which changes reproduce the candidate's result. Zeller's delta debugging
  ("dd", with interference): split the changes in halves, keep the half that reproduces the
  candidate alone; when neither half does, both are needed and each is minimised with the
  other applied. With one culprit among n it tests at most 2 sets per halving: at most
  2*ceil(log2 n) runs beyond the two sides.
* ``first_bad``: ``git bisect`` over a commit list whose first element is known good and
  last known bad; a commit that cannot be tested is skipped (its neighbours are tried) and
  listed. ceil(log2 c) tests for c commits when none is skipped.

``test`` returns ``"bad"`` (the candidate's result), ``"good"`` (the baseline's), ``"other"``
(neither) or ``"skip"`` (could not run); only ``"bad"`` counts as reproducing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def isolate(changes: Sequence[str], test: Callable[[frozenset[str]], str]) -> list[str]:
    """A minimal subset of ``changes`` whose application alone makes ``test`` say ``"bad"``.

    ``test(frozenset(changes))`` is taken as ``"bad"`` (it is the candidate) and the empty set as
    good. Results are cached by set, so a set is never run twice.
    """
    cache: dict[frozenset[str], str] = {}

    def bad(subset: frozenset[str]) -> bool:
        if subset not in cache:
            cache[subset] = test(subset)
        return cache[subset] == "bad"

    def dd(part: list[str], rest: frozenset[str]) -> list[str]:
        if len(part) <= 1:
            return list(part)
        middle = len(part) // 2
        first, second = part[:middle], part[middle:]
        if bad(rest | frozenset(first)):
            return dd(first, rest)
        if bad(rest | frozenset(second)):
            return dd(second, rest)
        return dd(first, rest | frozenset(second)) + dd(second, rest | frozenset(first))

    return dd(list(changes), frozenset())


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
        if outcome == "skip":
            skipped.append(commits[index])
        elif outcome == "bad":
            bad = index
        else:
            good = index
    return commits[bad], skipped
