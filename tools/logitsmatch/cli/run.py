"""`logitsmatch run`: one suite on this venv's toolchain, judged against its golden.

Prints the toolchain, the flags the platform does not apply, the coordinator
address and the stand-ins in use, then the verdict. The result and its
provenance are published into the results tree only when every rank finished;
a failed or interrupted run leaves nothing that could be taken for a result.
"""

from __future__ import annotations

from logitsmatch.flows.run_suite import run_suite
from logitsmatch.run.platforms import add_platform_option
from logitsmatch.toolchains import add_toolchain_option

EXAMPLE = (
    "logitsmatch run gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq --toolchain py3.11-torch2.13.0-mcore0.16.1"
)


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    add_toolchain_option(parser, "toolchain name from pyproject.toml (must match this venv)", required=True)
    add_platform_option(parser, "profile to run on")
    parser.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=None,
        metavar="N",
        help="override the suite's TP size (results and goldens are then labelled <platform>-tpN-<dtype>)",
    )
    parser.add_argument(
        "--layout",
        default=None,
        metavar="LAYOUT",
        help="run at another parallel layout, e.g. tp1, pp8, tp2pp2dp2, dp8 (results and goldens are then "
        "labelled <platform>-<layout>-<dtype>; see logitsmatch invariance)",
    )
    parser.add_argument("--schedule", default="together", metavar="S",
                        help="how the prompts reach the engine: together (the suite's own), alone, reversed, mixed, "
                        "chunked or forward (no engine: GPTModel's training forward); any but together is labelled "
                        "<platform>-sched-S-<dtype> (see logitsmatch.schedules)")
    parser.add_argument("--batch-invariant", action="store_true",
                        help="run with megatron-core's batch_invariant_mode where the release and platform have it "
                        "(GPU; on CPU one line says why not)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16", "fp32", "bf16", "fp16"),
        help="override the dtype the platform takes from the suite (labelled like --tensor-parallel-size)",
    )
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="torch_dist checkpoint to load instead of synthetic weights")
    parser.add_argument("--tokenizer-model", metavar="PATH", default=None,
                        help="TikTokenizer vocab file (with --checkpoint)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                        help="deadline in seconds (default: the suite's)")
    parser.add_argument("--bind-host", metavar="ADDRESS", default="127.0.0.1",
                        help="address the coordinator and engines bind to")
    parser.add_argument("--no-compare", action="store_true", help="run and publish the result, skip the golden check")
    parser.add_argument("--keep-run-dir", action="store_true", help="keep per-rank logs of a successful run")
    parser.add_argument("--capture", nargs="?", type=int, const=3, default=None, metavar="K",
                        help="record every module's output for the prefill and the first K decode steps (default 3) "
                        "into capture/ beside the result (docs/capture_format.md)")
    parser.add_argument(
        "--candidate",
        default=None,
        metavar="NAME",
        help="this venv is a candidate derived from --toolchain (pre-release validation): label results NAME, "
        "record its actual versions, judge against --toolchain's golden",
    )


def main(args) -> int:
    """The run's flow (logitsmatch.flows.run_suite): resolve, prepare, plan, launch, collect, publish and judge."""
    return run_suite(args)
