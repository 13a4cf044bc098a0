"""`logitsmatch run`: one suite on this venv's toolchain, judged against its golden.

Prints the toolchain, the flags the platform does not apply, the coordinator
address and the stand-ins in use, then the verdict. The result and its
provenance are published into the results tree only when every rank finished;
a failed or interrupted run leaves nothing that could be taken for a result.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_OK, BadInput, Unsupported
from logitsmatch.log import logger
from logitsmatch.run.platforms import add_platform_option

EXAMPLE = (
    "logitsmatch run gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq --toolchain py3.11-torch2.13.0-mcore0.16.1"
)


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    parser.add_argument("--toolchain", metavar="NAME", required=True,
                        help="toolchain name from pyproject.toml (must match this venv)")
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


def verify_toolchain(toolchain) -> None:
    """Refuse to label results with a toolchain this venv does not have."""
    import importlib.metadata

    try:
        installed = {name: importlib.metadata.version(name) for name in ("torch", "megatron-core")}
    except importlib.metadata.PackageNotFoundError as exc:
        raise BadInput(f"this venv has no {exc.name}: run inside a toolchain venv (nox -s logitsmatch)") from None
    wanted = {"torch": toolchain.torch, "megatron-core": toolchain.megatron_core}
    python = "{}.{}".format(*sys.version_info[:2])
    mismatches = [
        f"{name} {installed[name]} (toolchain pins {wanted[name]})"
        for name in wanted
        if installed[name].split("+")[0] != wanted[name]
    ]
    if python != toolchain.python:
        mismatches.append(f"python {python} (toolchain pins {toolchain.python})")
    if mismatches:
        raise BadInput(f"this venv does not match toolchain {toolchain.name}: " + "; ".join(mismatches))


def installed_release() -> tuple[int, int, int]:
    """This venv's megatron-core release (the planner refuses layouts it cannot run)."""
    import importlib.metadata

    from logitsmatch.layouts import parse_version

    try:
        return parse_version(importlib.metadata.version("megatron-core"))
    except importlib.metadata.PackageNotFoundError:
        raise BadInput("this venv has no megatron-core: run inside a toolchain venv (nox -s logitsmatch)") from None


@dataclass
class Weights:
    """Where this run's weights come from, as recorded in provenance."""

    checkpoint_dir: Path
    record: dict
    prepare_s: float


def prepare_weights(choice, timeout: float) -> Weights:
    """The synthetic checkpoint (written once, cached) or the user's checkpoint directory."""
    from logitsmatch.checkpoint_args import resolve_checkpoint_dir
    from logitsmatch.run.synthetic_weights import ensure_checkpoint

    started = time.monotonic()
    if choice.load_path is not None:
        return Weights(choice.load_path, {"source": "checkpoint", "path": str(choice.load_path)}, 0.0)
    from logitsmatch.run.synthetic_weights import GENERATOR_VERSION

    cached, digest = ensure_checkpoint(choice.synthetic_spec, paths.cache_root(), timeout)
    record = {
        "source": "synthetic",
        "spec": choice.synthetic_spec,
        "generator_version": GENERATOR_VERSION,
        "sha256": digest,
    }
    return Weights(resolve_checkpoint_dir(cached), record, time.monotonic() - started)


def describe_layout(parallel: dict) -> str:
    """'tp2pp2dp2: 2 engines of TP2 x PP2' and the like, for people."""
    engine = " x ".join(f"{name}{size}" for name, size in (("TP", parallel["tensor"]), ("PP", parallel["pipeline"]))
                        if size > 1 or name == "TP")
    text = f"{parallel['layout']}: {parallel['data']} engine{'s' if parallel['data'] > 1 else ''} of {engine}"
    if parallel.get("expert", 1) > 1:
        text += f", experts EP{parallel['expert']} x ETP{parallel['expert_tensor']}"
    return text


def announce(suite, label: str, toolchain, candidate: bool, platform, plan: dict, weights: Weights, flags) -> None:
    from logitsmatch.provenance import package_versions

    versions = package_versions()
    platform_label = platform.label(suite.model_args, suite.world_size)
    logger.info(f"suite {suite.name} | toolchain {label} | platform {platform_label}")
    logger.info(
        f"python {sys.version.split()[0]}, torch {versions['torch']}, megatron-core {versions['megatron-core']}"
        + (f" (candidate {label} of {toolchain.name})" if candidate else "")
    )
    ranks = f"{plan['world_size']} rank{'s' if plan['world_size'] != 1 else ''}"
    logger.info(f"{ranks} ({platform.backend}), layout {describe_layout(plan['parallel'])}, "
                f"dtype {plan['dtype']}, weights: {weights.record['source']}")
    for line in flags.lines(platform_label):
        logger.info(line.strip())
    schedule = request_schedule(plan)
    if schedule["timing_dependent"]:
        logger.warning(f"{schedule['prompts']} prompts over {plan['parallel']['data']} engines: each engine adds its "
                       "requests as they arrive, so its batch schedule depends on arrival timing")
    sys.stdout.flush()


def request_schedule(plan: dict) -> dict:
    """How requests reach the engines (see run.plan.hold_requests), as provenance records it."""
    engines, prompts = plan["parallel"]["data"], len(plan["schedule"]["submit"])  # mixed: the extras too
    return {"engines": engines, "prompts": prompts, "held_until_all_arrived": plan["inference"].get("hold_requests"),
            "timing_dependent": engines > 1 and prompts > engines}


def schedule_refusal(adapter, platform, layout, release: tuple[int, int, int]) -> str | None:
    """Why this run cannot take its schedule (None: it can)."""
    if platform.schedule == "chunked" and not adapter.supports_chunked_prefill():
        return f"schedule chunked: chunked prefill is not supported by megatron-core {'.'.join(map(str, release))}"
    if platform.schedule == "forward" and layout.pipeline > 1:
        return ("schedule forward: not implemented for pipeline parallel > 1 (a forward over stages needs "
                "megatron's pipeline schedule; logitsmatch runs GPTModel directly)")
    return None


def batch_invariant_decision(requested: bool, adapter, platform, release: tuple[int, int, int]) -> dict:
    """{requested, applied, why}: megatron-core's batch_invariant_mode, where release and platform have it."""
    if not requested:
        return {"requested": False, "applied": False}
    version = ".".join(map(str, release))
    if not adapter.has_batch_invariant_mode():
        raise Unsupported(f"--batch-invariant: megatron-core {version} has no batch_invariant_mode")
    if platform.device == "cpu":
        return {"requested": True, "applied": False, "why": (
            f"not applied on platform cpu (megatron-core {version}'s batch_invariant_mode swaps aten mm, addmm, "
            "_log_softmax and mean for Triton GPU kernels and requires --attention-backend flash, i.e. flash-attn "
            "on CUDA)")}
    return {"requested": True, "applied": True}


def forward_reference(suite, platform, label: str, toolchain: str, project: Path, candidate: bool = False) -> dict:
    """The token sequences the ``forward`` schedule scores: the suite's ``together`` result at this layout when it
    stands (fresh for this toolchain or candidate), else this toolchain's golden at this layout."""
    from logitsmatch.provenance import freshness_problem
    from logitsmatch.run.freshness import candidate_problem
    from logitsmatch.run.plan import expected_weights
    from logitsmatch.toolchains import get_toolchain

    together = platform.configured(schedule="together", batch_invariant=False).label(suite.model_args, suite.world_size)
    result = paths.result_path(suite.name, together, label)
    chain = get_toolchain(project / "pyproject.toml", toolchain)
    problem = (candidate_problem(result, suite, project, chain, label) if candidate
               else freshness_problem(result, suite, expected_weights(suite, project), chain))
    candidates = [] if problem else [result]
    candidates.append(paths.golden_path(suite.name, together, toolchain))
    for path in candidates:
        if path.is_file():
            from logitsmatch.judge.golden_io import load_golden, request_ids

            document = load_golden(path)
            requests = {key: {"input_prompt": document[key]["input_prompt"],
                              "generated_text": document[key].get("generated_text", ""),
                              "generated_tokens": document[key]["generated_tokens"],
                              "logprobs_count": len(document[key]["logprobs"]) if "logprobs" in document[key] else None}
                        for key in request_ids(document)}
            return {"source": str(paths.shown_path(path, project)), "requests": requests}
    raise BadInput(f"schedule forward needs the suite's together result at this layout ({result}) or a golden "
                   f"({candidates[-1]}): run `logitsmatch run {suite.name} --toolchain {toolchain}` first")


def describe_schedule(schedule: dict) -> str:
    """One line for people: what the schedule does in this run."""
    name, submitted = schedule["name"], len(schedule["submit"])
    if not schedule["engine"]:
        return (f"schedule forward: GPTModel forward (training path, no engine) over prompt + generated tokens of "
                f"{schedule['reference']['source']}")
    text = f"schedule {name}: {submitted} request{'s' if submitted != 1 else ''} submitted " + (
        "one at a time, each after the previous finished" if schedule["one_at_a_time"] else "together")
    if schedule.get("mixed"):
        text += (
            f" ({submitted - sum(1 for item in schedule['submit'] if item['request_id'] is not None)} extra prompts "
            f"of {schedule['mixed']['extra_words']} words, seed {schedule['mixed']['seed']}; not written)"
        )
    if schedule["chunked_prefill_tokens"]:
        text += f", chunked prefill at {schedule['chunked_prefill_tokens']} tokens per step"
    return text


def schedule_record(schedule: dict) -> dict:
    """The schedule as provenance records it (the reference's source, not its tokens)."""
    record = {key: value for key, value in schedule.items() if key != "reference"}
    if "reference" in schedule:
        record["reference"] = schedule["reference"]["source"]
    return record


def report_ranks(run, plan: dict, wall_s: float) -> dict:
    """Print what the ranks left behind (coordinator, stand-ins, phases, engines, memory); return it for provenance."""
    status = run.rank_status(0)
    network = run.read_network()
    stand_ins = run.read_stand_ins()
    logger.info(f"coordinator {network['coordinator']} | engine sockets on {network['bind_host']}")
    if network.get("coordinator_port_requested"):
        logger.warning(
            f"coordinator port {network['coordinator_port_requested']} was taken; megatron-core chose another"
        )
    for name in stand_ins:
        logger.info(f"stand-in: {name}")
    zygote_s = run.read_zygote().get("prepare_s")
    phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in status["timings_s"].items())
    logger.info(f"ranks finished in {wall_s:.1f} s; zygote start-up {zygote_s or 0:.1f}s; phases (rank 0): {phases}")
    memory = run.memory(plan["world_size"])
    logger.info(f"peak RSS per rank (MiB): {memory['peak_rss_mib_per_rank']}; "
                f"coordinator: {memory['coordinator_peak_rss_mib']}")
    served_by = run.read_served_by()
    engines = sorted(set((served_by or {}).values()))
    logger.info(f"requests served by engine (data-parallel rank): {served_by} "
                f"({len(engines)} of {plan['parallel']['data']} engines served)")
    schedule = run.read_coordinator_schedule()
    if schedule is not None:
        routed = {str(record.get("request_id")): record.get("rank_index") for record in schedule.get("records", [])}
        logger.info(
            f"megatron-core's coordinator schedule: policy {schedule.get('policy')}, request -> engine {routed}"
        )
    network = {**network, "served_by_dp_rank": served_by, "coordinator_schedule": schedule}
    timings = {"zygote_prepare": zygote_s, **status["timings_s"]}
    return {"network": network, "stand_ins": stand_ins, "timings_s": timings, "memory": memory}


def harness_inputs(run, plan: dict) -> tuple[dict, dict]:
    """What logitsmatch fed this run beyond its packages: the provenance summary and the full
    per-rank record (every loaded tensor's digest), which is published as ``inputs.json``."""
    import hashlib

    from logitsmatch.run.plan import comparable_plan

    ranks = run.read_inputs(plan["world_size"])
    combined = hashlib.sha256("".join(r["weights"]["digest"] for r in ranks).encode()).hexdigest() if ranks else None
    first = ranks[0] if ranks else {}
    summary = {
        "loaded_weights_digest": combined,
        "ranks_reporting": len(ranks),
        "megatron_core": first.get("megatron_core"),
        "adapter": first.get("adapter"),
        "adapter_decisions": first.get("decisions"),
        "hardware_class": (first.get("hardware") or {}).get("class"),
        "plan": comparable_plan(plan),
    }
    return summary, {"checkpoint_dir": plan["checkpoint_dir"], "ranks": ranks}


def ranks_hardware(ranks: list[dict]) -> dict:
    """Rank 0's hardware identity (the ranks' own view: their threads, their ISA), with the classes of the
    others when they differ (a multi-node run on mixed machines)."""
    from logitsmatch import hardware

    identities = [record["hardware"] for record in ranks if record.get("hardware")]
    if not identities:
        return hardware.probe()
    first = identities[0]
    others = sorted({identity["class"] for identity in identities} - {first["class"]})
    return {**first, "other_rank_classes": others} if others else first


def publish(run, target: Path, provenance: dict, inputs: dict | None = None) -> Path:
    """Write a finished run's result to ``target`` (results/<suite>/<platform>/<toolchain>/) in the
    golden files' layout, and its provenance beside it, each atomically; the per-rank inputs as
    ``inputs.json`` and a capture as ``capture/`` beside them (an older capture is removed)."""
    import json

    from logitsmatch.judge.golden_io import write_json_atomic

    if inputs is not None:
        write_json_atomic(paths.inputs_path(target), inputs)
    published_capture = paths.capture_dir(target)
    if published_capture.exists():
        shutil.rmtree(published_capture)
    if run.capture.is_dir():
        shutil.move(str(run.capture), str(published_capture))
    write_json_atomic(paths.provenance_path(target), provenance)
    write_json_atomic(target, json.loads(run.result.read_text()))
    return target


def main(args, results_root: Path | None = None) -> int:
    """Run, publish under ``results_root`` (default: the results tree), then judge unless --no-compare.

    The run ends with the process that started it (nox, a shell, a CI job): if that one dies, even
    by SIGKILL, this process gets SIGTERM, which ends every process of the run (exit 130).
    """
    import signal

    from logitsmatch import layouts
    from logitsmatch import provenance as provenance_module
    from logitsmatch.lifetime import die_with_parent
    from logitsmatch.rank.checkpoint import read_checkpoint_args
    from logitsmatch.run.launcher import launch, publish_lock
    from logitsmatch.run.plan import build_plan, capture_spec, choose_checkpoint, launch_env, tokenizer_spec
    from logitsmatch.run.platforms import get_platform
    from logitsmatch.run.runfiles import RunDir
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    die_with_parent(sig=signal.SIGTERM)
    project = paths.project_root()
    toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    if args.candidate is None:
        verify_toolchain(toolchain)
    label = args.candidate or toolchain.name
    suite = load_suite(project, args.suite)
    layout = layouts.parse(args.layout) if args.layout else None
    platform = get_platform(args.platform, tensor_parallel=args.tensor_parallel_size, dtype=args.dtype, layout=layout,
                            schedule=args.schedule)
    release = installed_release()
    from logitsmatch.rank.adapters import check_supported, for_installed_megatron, installed_megatron_version

    check_supported(installed_megatron_version())  # a release no adapter speaks: one clear line now, not a dead rank
    with warnings.catch_warnings():  # megatron's import-time notices (no Apex, no TE) belong to the ranks' logs
        warnings.simplefilter("ignore")
        # Asking the release what it has imports megatron-core (seconds): only for the questions that need it.
        adapter = for_installed_megatron() if platform.schedule == "chunked" or args.batch_invariant else None
        run_layout = platform.layout(suite.model_args, suite.world_size)
        refusal = layouts.unsupported(run_layout, release) or schedule_refusal(adapter, platform, run_layout, release)
    if refusal:  # before any weights are written or run folder made
        raise Unsupported(f"suite {suite.name} not run: {refusal}")
    batch_invariant = batch_invariant_decision(args.batch_invariant, adapter, platform, release)
    if batch_invariant.get("applied"):
        platform = platform.configured(batch_invariant=True)
    platform_label = platform.label(suite.model_args, suite.world_size)
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise BadInput(f"--timeout must be a positive number of seconds, got {args.timeout}")
    timeout = args.timeout or suite.timeout_s

    started = time.monotonic()
    user_checkpoint = bool(args.checkpoint or suite.arg("--load"))
    tokenizer = tokenizer_spec(suite, project, user_checkpoint, args.tokenizer_model)
    choice = choose_checkpoint(suite, project, args.checkpoint, tokenizer, read_checkpoint_args)
    weights = prepare_weights(choice, timeout)

    target = paths.result_path(suite.name, platform_label, label, results_root)
    run = RunDir.create(target.parent)
    plan, flags = build_plan(suite, platform, choice, weights.checkpoint_dir, tokenizer, args.bind_host, release)
    if args.capture is not None:
        plan["capture"] = capture_spec(args.capture)
    plan["parallel"]["batch_invariant_mode"] = bool(batch_invariant.get("applied"))
    if not plan["schedule"]["engine"]:
        plan["schedule"]["reference"] = forward_reference(suite, platform, label, toolchain.name, project,
                                                          bool(args.candidate))
    run.write_plan(plan)
    announce(suite, label, toolchain, bool(args.candidate), platform, plan, weights, flags)
    logger.info(describe_schedule(plan["schedule"]))
    if batch_invariant.get("why"):
        logger.info(f"--batch-invariant: {batch_invariant['why']}")
    if "routing_indices" in suite.metrics and plan["moe"] and not layouts.records_routing(release):
        logger.info(layouts.routing_note(release))

    # One deadline for the whole run: what preparing the weights used is gone from the ranks' share.
    remaining = max(timeout - (time.monotonic() - started), 1.0)
    wall_s = launch(run, plan["world_size"], remaining, launch_env(suite, platform, run, args.bind_host))
    ranks = report_ranks(run, plan, wall_s)
    inputs_summary, inputs = harness_inputs(run, plan)

    record = provenance_module.collect(
        hardware=ranks_hardware(inputs["ranks"]),
        toolchain=label,
        candidate_of=toolchain.name if args.candidate else None,
        suite=suite.name,
        suite_config_sha256=suite.config_digest(),
        platform=platform_label,
        platform_decisions={
            **plan["platform"],
            "dtype": plan["dtype"],
            "parallel": plan["parallel"],
            "moe": plan["moe"],
        },
        weights=weights.record,
        stand_ins=ranks["stand_ins"],
        flags=flags.to_dict(),
        network=ranks["network"],
        timings_s={"weights_prepare": weights.prepare_s, "launch_wall": wall_s, **ranks["timings_s"]},
        memory=ranks["memory"],
        request_schedule=request_schedule(plan),
        schedule=schedule_record(plan["schedule"]),
        batch_invariant=batch_invariant,
        harness_inputs=inputs_summary,
        execution=provenance_module.execution(),
    )
    with publish_lock(target.parent):  # a concurrent run of the same triple publishes before or after, never between
        publish(run, target, record, inputs)
        if not args.keep_run_dir:
            shutil.rmtree(run.root, ignore_errors=True)
        logger.info(f"result: {target}")
        if args.no_compare:
            return EXIT_OK
        from logitsmatch.hardware import golden_of_class
        from logitsmatch.judge.verdict import judge_against_golden

        golden = golden_of_class(
            paths.golden_path(suite.name, platform_label, toolchain.name), record["hardware"]["class"]
        )
        return judge_against_golden(suite, target, golden, toolchain.name)
