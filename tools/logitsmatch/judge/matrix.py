"""N x N tables of compared outputs: toolchain drift (``matrix``) and layout invariance.

A toolchain's output for a suite is its latest fresh result (results tree) or,
failing that, its committed golden; ``source`` can force one or the other.
Every cell of a table is exactly what ``logitsmatch compare`` says for that
pair under the table's policy; a table is ``{"names", "cells", "missing"}``, and a drift table
says in a few words why each missing toolchain has no output (``missing_reasons``).
``render.matrix`` draws tables for people (terminal, Markdown, heatmap PNG).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import layouts, paths
from logitsmatch.collection import collected_result, is_collection
from logitsmatch.errors import BadInput
from logitsmatch.golden_pairs import require_one_record
from logitsmatch.hardware import class_of_golden
from logitsmatch.judge.compare import compare
from logitsmatch.judge.figures import plural, short_number, ulps_text
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.judge.ulps import coarsest
from logitsmatch.judge.verdict import run_dtype
from logitsmatch.toolchains import load_toolchains

SOURCES = ("auto", "results", "goldens")


def locate(
    suite: str, platform: str, toolchain: str, source: str = "auto", hardware_class: str | None = None
) -> Path | None:
    """The file holding ``toolchain``'s output for ``suite``, or None; ``source`` may name a collected tree."""
    if source not in SOURCES:
        return collected_result(Path(source), suite, platform, toolchain, hardware_class)
    result = paths.result_path(suite, platform, toolchain)
    golden = paths.golden_path(suite, platform, toolchain)
    candidates = {"auto": (result, golden), "results": (result,), "goldens": (golden,)}[source]
    found = next((path for path in candidates if path.is_file()), None)
    if found == golden:
        require_one_record(golden, suite, toolchain)
    return found


@dataclass(frozen=True)
class Cell:
    """One ordered pair (row = golden side, column = current side) of one suite."""

    tokens_agree: bool
    first_divergence: int | None  # smallest first-divergence index over requests
    max_abs_delta: float
    n_over_tolerance: int
    passed: bool
    n_moved: int = 0  # compared logprobs that differ bitwise
    n_compared: int = 0
    max_ulps: int = 0
    same_class: bool | None = None  # whether the two results ran on one hardware class (None: not known)
    ulp_width: str = "float32"  # the width max_ulps is counted in (judge.ulps)

    @property
    def identical(self) -> bool:
        """Same tokens and every compared logprob equal to the last bit (and every check passed)."""
        return self.tokens_agree and self.n_moved == 0 and self.passed

    def to_dict(self) -> dict:
        return {
            "tokens_agree": self.tokens_agree,
            "first_divergence": self.first_divergence,
            "max_abs_delta": json_float(self.max_abs_delta),
            "max_ulps": self.max_ulps,
            "ulp_width": self.ulp_width,
            "n_moved": self.n_moved,
            "n_compared": self.n_compared,
            "n_over_tolerance": self.n_over_tolerance,
            "passed": self.passed,
            "same_class": self.same_class,
        }

    def code(self) -> str:
        """The cell in a few characters (see LEGEND): =, ~36, !3, @5 !3."""
        cross = "†" if self.same_class is False else ""
        if self.identical:
            return "=" + cross
        parts = [] if self.tokens_agree else [f"@{self.first_divergence}"]
        if self.n_over_tolerance:
            parts.append(f"!{self.n_over_tolerance}")
        elif self.n_moved:
            parts.append(f"~{self.n_moved}")
        if not self.passed and self.tokens_agree and not self.n_over_tolerance:
            parts.append("fails")  # another check failed: a failing cell never reads as a pass
        return " ".join(parts) + cross

    def label(self) -> str:
        """The cell in words, for Markdown."""
        cross = " (hardware classes differ)" if self.same_class is False else ""
        if self.identical:
            return "=" + cross
        tokens = "tokens =" if self.tokens_agree else f"tokens ≠ @{self.first_divergence}"
        moved = f"{self.n_moved} of {self.n_compared} moved"
        if self.n_moved:
            moved += f" (max {short_number(self.max_abs_delta)}, {ulps_text(self.max_ulps, self.ulp_width)})"
        return f"{tokens}, {moved}, {self.n_over_tolerance} over" + ("" if self.passed else ", fails") + cross


LEGEND = ("= bitwise identical (same tokens, every logprob equal to the last bit); ~N: N logprobs moved, "
          "all within tolerance; !N: N logprobs over tolerance; @K: tokens differ from generated index K; "
          "fails: another check failed; †: the two results ran on different hardware classes (bitwise agreement "
          "is not expected); row = golden side, column = current side")


def cell_of(result, same_class: bool | None = None) -> Cell:
    divergences = [index for index in result.first_divergences.values() if index is not None]
    return Cell(
        tokens_agree=result.tokens_agree,
        first_divergence=min(divergences) if divergences else None,
        max_abs_delta=float(result.max_abs_delta),
        n_over_tolerance=int(result.n_over_tolerance),
        passed=bool(result.passed),
        n_moved=int(result.n_moved),
        n_compared=int(result.n_compared),
        max_ulps=int(result.max_ulps),
        same_class=same_class,
        ulp_width=result.ulp_width,
    )


def pairwise(
    documents: dict[str, dict], policy, classes: dict[str, str | None] | None = None,
    dtypes: dict[str, str | None] | None = None,
) -> dict[str, dict[str, Cell]]:
    """Every ordered pair of the documents (row = golden side, column = current side), as `compare` judges it;
    ``classes`` (each document's hardware class, None where unknown) marks the pairs across classes, ``dtypes``
    (each run's dtype, None where unknown) sets the width the pair's ulps are counted in."""
    classes, dtypes = classes or {}, dtypes or {}

    def same(row: str, col: str) -> bool | None:
        known = classes.get(row), classes.get(col)
        return None if None in known else known[0] == known[1]

    def judged(row: str, col: str):
        return compare(documents[row], documents[col], policy, coarsest([dtypes.get(row), dtypes.get(col)]))

    return {row: {col: cell_of(judged(row, col), same(row, col)) for col in documents} for row in documents}


def drift_matrix(
    suite, platform: str, toolchains: list[str], source: str, policy, hardware_class: str | None = None
) -> dict:
    """{"names": [...toolchains], "missing", "missing_reasons", "files", "cells": {row: {col: Cell}}} for one
    suite."""
    files = {name: locate(suite.name, platform, name, source, hardware_class) for name in toolchains}
    present = [name for name in toolchains if files[name] is not None]
    missing = [name for name in toolchains if name not in present]
    classes = {name: class_of_golden(files[name]) for name in present}
    dtypes = {name: run_dtype(files[name]) for name in present}
    cells = pairwise({name: load_golden(files[name]) for name in present}, policy, classes, dtypes)
    return {"names": present, "missing": missing, "missing_reasons": missing_reasons(suite, platform, missing),
            "files": files, "cells": cells, "tolerance": policy.abs_tol, "hardware_classes": classes}


def missing_reasons(suite, platform: str, missing: list[str]) -> dict[str, str]:
    """Why each toolchain has no output for ``suite``, in a few words: "GPU toolchain" (on a CPU platform),
    "0.15.x cannot run PP8 through the coordinator" (layouts.unsupported says why at length), else "not recorded"
    (no golden, or no result, of that toolchain)."""
    known = load_toolchains(paths.project_root() / "pyproject.toml")
    layout = layouts.of_suite(suite.model_args, suite.world_size, suite.name)
    reasons = {}
    for name in missing:
        toolchain = known.get(name)
        if toolchain is None:
            reasons[name] = "not recorded"
            continue
        version = layouts.parse_version(toolchain.megatron_core)
        if toolchain.requires_gpu and platform.split("-", maxsplit=1)[0] == "cpu":
            reasons[name] = "GPU toolchain"
        elif layouts.unsupported(layout, version):
            what = f"PP{layout.pipeline}" if layout.pipeline > 1 else f"EP{layout.expert} across engines"
            reasons[name] = f"{version[0]}.{version[1]}.x cannot run {what} through the coordinator"
        else:
            reasons[name] = "not recorded"
    return reasons


def missing_text(table: dict, noun: str = "toolchain") -> str:
    """One short line: how many have no output and why, "no output for 5 toolchains: 0.15.x cannot run PP2 through
    the coordinator (4), GPU toolchain (1)"; the names themselves where no reasons are known."""
    missing = table["missing"]
    reasons = table.get("missing_reasons")
    if not reasons:
        return "no output for: " + ", ".join(missing)
    counts = Counter(reasons.get(name, "not recorded") for name in missing)  # in order of first appearance
    return (f"no output for {plural(len(missing), noun)}: "
            + ", ".join(f"{reason} ({count})" for reason, count in counts.items()))


def check_source(source: str) -> str:
    """auto, results, goldens, or a folder made by ``logitsmatch collect``."""
    if source not in SOURCES and not is_collection(Path(source)):
        raise BadInput(
            f"unknown source {source!r} (choose {', '.join(SOURCES)}, or a folder made by logitsmatch collect)"
        )
    return source


def short_suite(name: str) -> str:
    """A suite's name without the family's common prefix and suffix: tp8_pp1_dp1_tiny."""
    return name.removeprefix("gpt_dynamic_inference_").removesuffix("_logitsmatch_zmq")


def table_json(table: dict) -> dict:
    return {
        "names": table["names"],
        "missing": table["missing"],
        **({"missing_reasons": table["missing_reasons"]} if "missing_reasons" in table else {}),
        "files": {
            name: str(paths.shown_path(path)) for name, path in table.get("files", {}).items() if path is not None
        },
        "cells": {r: {c: cell.to_dict() for c, cell in cols.items()} for r, cols in table["cells"].items()},
        "tolerance": table.get("tolerance"),
        **({"hardware_classes": table["hardware_classes"]} if "hardware_classes" in table else {}),
    }
