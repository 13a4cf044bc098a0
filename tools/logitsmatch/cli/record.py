"""`logitsmatch record`: turn a fresh result into the golden, never silently.

The report against the current golden is always shown first; an existing
golden is replaced only with ``--force``. The provenance sidecar is written
before the golden and names the golden's sha256, and both writes are atomic,
so an interrupted record leaves the old golden (or a detectable mismatch),
never a half-written file.
"""

from __future__ import annotations

from logitsmatch.flows.record import record
from logitsmatch.run.platforms import add_platform_option
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = (
    "logitsmatch record gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq --toolchain "
    "py3.11-torch2.13.0-mcore0.16.1 --force"
)


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    add_toolchain_option(parser, "toolchain whose latest result becomes the golden", required=True)
    add_platform_option(parser, "of the result")
    parser.add_argument("--force", action="store_true", help="replace an existing golden")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", default=None,
                        help="record from a tree made by `logitsmatch collect` instead of results/")
    parser.add_argument("--only-failing", action="store_true",
                        help="record only where the result fails against the golden (or there is none)")
    parser.add_argument("--hardware-class", metavar="CLASS", default=None,
                        help="the result's hardware class, to record a golden of that class beside another class's")


def main(args) -> int:
    """The record flow (logitsmatch.flows.record): find the fresh result, judge it, write the golden."""
    return record(args)
