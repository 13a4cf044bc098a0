"""A fresh result made the golden, never silently: the flow behind `logitsmatch record`.

The tasks find the triple's fresh result (results/ or a collected tree) and the golden it may
replace, show the report against that golden, and write the golden only where it is missing or
``--force`` says so. The golden and its provenance sidecar (which names the golden's sha256) are
replaced as one record (``golden_pairs``): an interrupted record leaves the old pair or the new
one, and a second record of the same golden at the same time is refused. A collected tree given
with ``--from`` is only read: the reports of the judgement are printed, not written into it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import read_input, refuse_output_over_inputs
from logitsmatch.flows import execute
from logitsmatch.golden_pairs import write_pair
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.log import logger
from logitsmatch.provenance import freshness_problem, invocation, read_sidecar
from logitsmatch.run.platforms import harness_platform


@dataclass
class Recording:
    """The suite, the result to record with its provenance, and the golden it becomes."""

    suite: Any
    result: Path
    provenance: dict
    golden: Path


def fresh_result(suite, platform: str, toolchain, from_dir: Path | None = None,
                 hardware_class: str | None = None) -> tuple[Path, dict]:
    """The triple's result — the latest in results/, or the collected one of ``hardware_class`` in ``from_dir`` —
    if it ran the suite as it is now on ``toolchain`` itself."""
    from logitsmatch.collection import collected_result
    from logitsmatch.run.plan import expected_weights

    if from_dir is None:
        result = paths.result_path(suite.name, platform, toolchain.name)
    else:
        result = collected_result(from_dir, suite.name, platform, toolchain.name, hardware_class)
        if result is None:
            wanted = f" of hardware class {hardware_class}" if hardware_class else ""
            raise BadInput(
                f"{from_dir} holds no collected result{wanted} of {suite.name} on {platform} with {toolchain.name}"
            )
    problem = freshness_problem(result, suite, expected_weights(suite, paths.project_root()), toolchain)
    if problem is not None:
        raise BadInput(f"cannot record {result} for {suite.name} on {platform} with {toolchain.name}: {problem} "
                       f"(run it again: nox -s \"logitsmatch({toolchain.name})\" -- {suite.name})")
    return result, read_sidecar(paths.provenance_path(result))


def golden_for(first_golden: Path, provenance: dict, hardware_class: str | None) -> Path:
    """Where a result of the class its provenance names may be recorded: over the golden of its own class only.

    A result of another class than the first golden's is refused unless ``hardware_class`` names the result's class,
    which keeps a golden of that class beside the first (``…@<class>.json``).
    """
    from logitsmatch.hardware import class_of_golden, golden_of_class, of_provenance
    from logitsmatch.paths import class_golden_path

    identity = of_provenance(provenance)
    result_class = identity["class"] if identity and "unknown" not in identity["class"] else None
    if hardware_class is not None and hardware_class != result_class:
        raise BadInput(f"--hardware-class {hardware_class} is not the result's class ({result_class or 'unknown'})")
    golden_class = class_of_golden(first_golden)
    if golden_class is None or result_class is None or golden_class == result_class:
        return golden_of_class(first_golden, result_class)
    if hardware_class is None:
        own = class_golden_path(first_golden, result_class)
        if own.is_file():
            return own
        raise BadInput(
            f"the result ran on hardware class {result_class}, {first_golden.name} is of class {golden_class}: "
            f"pass --hardware-class {result_class} to keep a golden of that class beside it"
        )
    return class_golden_path(first_golden, hardware_class)


def resolve(_, args) -> Recording:
    """The suite, the triple's fresh result and the golden it may become (never over its own inputs)."""
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    args.platform = harness_platform(args.platform)
    project = paths.project_root()
    toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    suite = load_suite(project, args.suite)
    from_dir = Path(args.from_dir) if args.from_dir else None
    result_path, provenance = fresh_result(suite, args.platform, toolchain, from_dir, args.hardware_class)
    golden = golden_for(paths.golden_path(suite.name, args.platform, args.toolchain), provenance, args.hardware_class)
    refuse_output_over_inputs([golden, paths.provenance_path(golden)],
                              [result_path, paths.provenance_path(result_path)])
    return Recording(suite, result_path, provenance, golden)


def judge_existing(recording: Recording, args) -> Recording | int:
    """The report against an existing golden; stop there unless --force (or --only-failing and it passes)."""
    from logitsmatch.judge.verdict import judge_against_golden

    golden = recording.golden
    if golden.is_file():
        passed = judge_against_golden(recording.suite, recording.result, golden, args.toolchain,
                                      reports_beside=args.from_dir is None) == EXIT_OK
        if passed:
            logger.info("the result matches the golden within policy")
            if args.only_failing:
                logger.info(f"not recorded (--only-failing): {golden} stands")
                return EXIT_OK
        if not args.force:
            logger.info(f"not overwritten: {golden} exists (review the report above, then pass --force)")
            return EXIT_DRIFT
    return recording


def write_golden(recording: Recording, args) -> int:
    """The golden and its provenance (naming the golden's sha256), as one record."""
    golden, provenance = recording.golden, recording.provenance
    load_golden(recording.result)  # refuse a malformed result before touching the golden
    body = read_input(recording.result)
    provenance["recorded"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": invocation(),
        "replaced_existing": golden.is_file(),
    }
    write_pair(golden, body, provenance)
    logger.info(f"recorded {golden}")
    return EXIT_OK


WORKFLOW = (resolve, judge_existing, write_golden)


def record(args) -> int:
    """Record the triple's fresh result as its golden (see the module's docstring for when it does not)."""
    return execute(WORKFLOW, args)
