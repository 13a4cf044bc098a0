"""Which suite two golden-format files belong to, so that `compare` judges them as the suite's own runs are.

A suite's METRICS (and its comparison block) decide what is checked: the tiny MoE suite checks
routing_indices, the dense ones do not. Two files compared by hand are a known suite's when --suite names
it, else when their provenance sidecars name one suite, else when their paths lie under one suite's
folder (golden_values/<suite>/..., results/<suite>/...). Files of two different suites, or of none, are
judged on the default metrics; the report says which metric set was used either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import BadInput
from logitsmatch.judge.verdict import provenance
from logitsmatch.suites import Suite, load_suite, suite_names


@dataclass(frozen=True)
class KnownSuite:
    """The suite the files were recognised as (None: none) and, in words, how (for the report)."""

    suite: Suite | None
    origin: str

    @property
    def policy(self):
        return None if self.suite is None else self.suite.policy


def _from_sidecar(path: Path, known: set[str]) -> str | None:
    """The suite a file's provenance sidecar names, when it has one naming a known suite."""
    recorded = provenance(path)
    name = recorded.get("suite") if isinstance(recorded, dict) else None
    return name if name in known else None


def _from_path(path: Path, known: set[str]) -> str | None:
    """The innermost folder of the path that is named after a known suite."""
    return next((part for part in reversed(Path(path).absolute().parts[:-1]) if part in known), None)


def recognise(files: list[str | Path], named: str | None = None) -> KnownSuite:
    """The suite of ``files`` (--suite ``named`` first, then the provenance sidecars, then the paths)."""
    project = paths.project_root()
    if named:
        return KnownSuite(load_suite(project, named), f"suite {named}'s METRICS, named by --suite")
    known = set(suite_names(project))
    for source, find in (("provenance sidecar", _from_sidecar), ("path", _from_path)):
        found = [find(Path(path), known) for path in files]
        names = sorted(set(found) - {None})
        if len(names) > 1:
            return KnownSuite(None, f"the default metrics: the files' {source}s name two suites, "
                                    f"{' and '.join(names)}; name one with --suite")
        if names:
            return KnownSuite(load_suite(project, names[0]),
                              f"suite {names[0]}'s METRICS, recognised from the {source}")
    return KnownSuite(None, "the default metrics: no known suite recognised, name one with --suite")


def one_suite(named: list[str] | None) -> str | None:
    """The one suite a repeatable --suite names for two files; two or more cannot judge one pair."""
    if named and len(named) > 1:
        raise BadInput(f"two files are judged under one suite's METRICS: name one --suite, not {len(named)}")
    return named[0] if named else None
