"""The suite runs one explanation shares: an environment two steps need runs once, within a stated bound.

Every suite run is a ``logitsmatch run`` subprocess in that environment's interpreter with this project's
``tools/`` first on PYTHONPATH, so both sides run the same harness code; a run is judged against the two sides
by the one comparator. The steps (``explain.package_search``, ``explain.commit_search``,
``explain.first_module``) build on ``SuiteRuns``; ``explain.explainer`` drives them.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from logitsmatch import paths
from logitsmatch.explain import environments as envs
from logitsmatch.explain.bisect import UNRESOLVED
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
        from logitsmatch.provenance import read_sidecar

        return read_sidecar(paths.provenance_path(self.result)) if self.ok else {}

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


class SuiteRuns:
    """The runs of one explanation so far, the bound on their number (and why it grew), the documents they
    loaded. Each step's class (``PackageSearch``, ``CommitSearch``, ``FirstModule``) is a subclass that runs and
    judges through it; ``explain.explainer.Explainer`` is all of them, so the steps share one set of runs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.runs: list[Run] = []
        self.started = time.monotonic()
        self.bound = 2  # at most this many runs: the two sides, then what each step states (``extend``)
        self.bound_notes: list[str] = []  # why the bound grew beyond what the groups give
        self.harness_digest = harness_digest(settings.project)
        self.documents: dict[str, dict] = {}  # run label -> its result, loaded once

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
            code, said = run_suite(self.settings.project, side, run_command(
                side, self.settings.suite, self.settings.toolchain, label, checkpoint=checkpoint,
                timeout_s=self.settings.timeout_s), results_root)
            wall = time.monotonic() - started
            if code == 0 and result.is_file():
                key_file.write_text(json.dumps(key, sort_keys=True))
                run = Run(len(self.runs) + 1, label, description, moved_to_candidate, side, result, None, wall, False)
            else:
                run = Run(len(self.runs) + 1, label, description, moved_to_candidate, side, None,
                          f"exit {code} after {wall:.0f} s: {said}", wall, False)
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


def run_command(side: envs.Side, suite: str, toolchain: str, label: str, checkpoint: str | None = None,
                options: tuple[str, ...] = (), timeout_s: float | None = None) -> list[str]:
    """The ``logitsmatch run`` of one suite in ``side``'s interpreter, published under the candidate label ``label``
    (captured for the first moving module, not compared: the caller judges); ``options``: further ``run`` options
    (``--layout tp2 --schedule chunked``)."""
    command = [side.python, "-m", "logitsmatch", "run", suite, "--toolchain", toolchain, "--candidate", label,
               "--no-compare", "--capture", str(CAPTURE_STEPS), *options]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    command += ["--timeout", str(timeout_s)] if timeout_s else []
    return command


def run_suite(project: Path, side: envs.Side, command: list[str], results_root: Path) -> tuple[int, str]:
    """Run ``command`` (``run_command``) with this project's ``tools/`` first on ``side``'s path and its results under
    ``results_root``: its exit code and the line of its output naming what went wrong (when it did)."""
    env = side.env(extra_path=(str(project / "tools"),))
    env.update(LOGITSMATCH_RESULTS=str(results_root), LOGITSMATCH_ROOT=str(project))
    completed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    return completed.returncode, first_error_line(completed.stderr or completed.stdout)


def published_run(project: Path, side: envs.Side, suite: str, toolchain: str, label: str, results_root: Path,
                  options: tuple[str, ...] = (), timeout_s: float | None = None) -> tuple[Path | None, str | None]:
    """One ``run_command`` run under ``results_root``: (its result file, None), or (None, the line saying why not)."""
    code, said = run_suite(project, side, run_command(side, suite, toolchain, label, options=options,
                                                      timeout_s=timeout_s), results_root)
    result = next((results_root / suite).glob(f"*/{label}/result.json"), None)
    return (result, None) if code == 0 and result else (None, f"exit {code}: {said}")


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


# What a suite run executes of the harness (a change here invalidates earlier runs; explain's own code does not).
RUN_CODE = ("*.py", "rank/*.py", "run/*.py", "cli/run.py", "flows/__init__.py", "flows/run_suite.py",
            "flows/run_report.py")


def harness_digest(project: Path) -> str:
    """What this project's suite runs execute of the harness, as a digest: a run made by other code is not reused."""
    digest = hashlib.sha256()
    package = project / "tools" / "logitsmatch"
    for path in sorted({path for pattern in RUN_CODE for path in package.glob(pattern)}):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
