"""`logitsmatch record`: turn a fresh result into the golden, never silently.

The report against the current golden is always shown first; an existing
golden is replaced only with ``--force``. The provenance sidecar is written
before the golden and names the golden's sha256, and both writes are atomic,
so an interrupted record leaves the old golden (or a detectable mismatch),
never a half-written file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import atomic_writer, read_input, refuse_output_over_inputs
from logitsmatch.judge.golden_io import load_golden, write_json_atomic
from logitsmatch.log import logger
from logitsmatch.provenance import freshness_problem, invocation

EXAMPLE = "logitsmatch record gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq --toolchain py3.11-torch2.13.0-mcore0.16.1 --force"


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    parser.add_argument("--toolchain", required=True, help="toolchain whose latest result becomes the golden")
    parser.add_argument("--platform", default="cpu", help="platform of the result (default: cpu)")
    parser.add_argument("--force", action="store_true", help="replace an existing golden")


def fresh_result(suite, platform: str, toolchain) -> tuple[Path, dict]:
    """The latest result of the triple, if it ran the suite as it is now on ``toolchain`` itself."""
    from logitsmatch.run.plan import expected_weights

    result = paths.result_path(suite.name, platform, toolchain.name)
    problem = freshness_problem(result, suite, expected_weights(suite, paths.project_root()), toolchain)
    if problem is not None:
        raise BadInput(f"cannot record {result} for {suite.name} on {platform} with {toolchain.name}: {problem} "
                       f"(run it again: nox -s \"logitsmatch({toolchain.name})\" -- {suite.name})")
    return result, json.loads(read_input(paths.provenance_path(result)))


def main(args) -> int:
    from logitsmatch.judge.verdict import judge_against_golden
    from logitsmatch.run.platforms import check_label
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    check_label(args.platform)
    project = paths.project_root()
    toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    suite = load_suite(project, args.suite)
    result_path, provenance = fresh_result(suite, args.platform, toolchain)
    golden = paths.golden_path(suite.name, args.platform, args.toolchain)
    refuse_output_over_inputs([golden, paths.provenance_path(golden)], [result_path, paths.provenance_path(result_path)])

    if golden.is_file():
        if judge_against_golden(suite, result_path, golden, args.toolchain) == EXIT_OK:
            logger.info("the result matches the golden within policy")
        if not args.force:
            logger.info(f"not overwritten: {golden} exists (review the report above, then pass --force)")
            return EXIT_DRIFT

    load_golden(result_path)  # refuse a malformed result before touching the golden
    body = read_input(result_path)
    provenance["recorded"] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": invocation(),
        "golden_sha256": hashlib.sha256(body).hexdigest(),
        "replaced_existing": golden.is_file(),
    }
    golden.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.provenance_path(golden), provenance)
    with atomic_writer(golden) as out:
        out.write(body)
    logger.info(f"recorded {golden}")
    return EXIT_OK
