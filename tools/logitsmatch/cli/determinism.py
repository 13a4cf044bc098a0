"""`logitsmatch determinism SUITE --toolchain T`: run a suite twice and demand bit-identical results.

Each run is a full ``logitsmatch run`` (same options) publishing into its own
folder under ``results/<suite>/.determinism/<id>/run-N/``, so the suite's
published result and its goldens are untouched. The results are then judged
with the DETERMINISTIC policy of ``logitsmatch.judge.policy`` (tokens, logprobs and
generated text, bit-exact). Exit 0 when every run matches the first, 1 (and a
"NOT DETERMINISTIC" verdict naming what moved) when one does not, or the
failing run's own exit code.
"""

from __future__ import annotations

import argparse

from logitsmatch.cli import run as run_cli
from logitsmatch.flows.determinism import determinism

EXAMPLE = (
    "logitsmatch determinism gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq "
    "--toolchain py3.11-torch2.13.0-mcore0.16.1"
)


def configure(parser: argparse.ArgumentParser) -> None:
    run_cli.configure(parser)
    parser.add_argument("--runs", type=int, default=2, metavar="N", help="how many runs to compare (default 2)")


def main(args: argparse.Namespace) -> int:
    """The determinism flow (logitsmatch.flows.determinism): run every time, then judge each against the first."""
    return determinism(args)
