"""One suite on this venv's toolchain, judged against its golden: the flow behind `logitsmatch run`.

The tasks resolve the suite, toolchain and platform, prepare the weights, plan and announce the
run, launch its ranks, collect their record into provenance, then publish and judge. The result
and its provenance are published into the results tree only when every rank finished; a failed
or interrupted run leaves nothing that could be taken for a result.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logitsmatch import paths
from logitsmatch.errors import EXIT_OK, BadInput, Unsupported
from logitsmatch.flows import execute
from logitsmatch.flows.run_report import announce, describe_schedule, report_ranks, request_schedule
from logitsmatch.log import logger


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


def feature_refusal(adapter, suite, release: tuple[int, int, int]) -> str | None:
    """Why this release cannot run a feature the suite's MODEL_ARGS ask for (None: it can)."""
    from logitsmatch.run.plan import (
        ASYNC_MODE,
        CHUNKED_PREFILL,
        COORDINATOR_POLICY,
        PREFIX_CACHING,
        USE_COORDINATOR,
        chunked_prefill,
        offline_driver,
        prefix_caching,
    )

    version = ".".join(map(str, release))
    caching = prefix_caching(suite.model_args)
    if caching and not adapter.supports_prefix_caching():
        return f"{PREFIX_CACHING}: prefix caching is not supported by megatron-core {version}"
    routing = (caching or {}).get("coordinator_policy")
    if routing and routing not in (policies := adapter.coordinator_policies()):
        return (f"{COORDINATOR_POLICY} {routing}: megatron-core {version}'s coordinator has no such routing policy "
                f"(it has {', '.join(policies)})")
    driver = offline_driver(suite.model_args, suite.driver)
    if driver and not adapter.has_offline_api():
        flags = (USE_COORDINATOR + (f" {ASYNC_MODE}" if driver["api"] == "MegatronAsyncLLM" else "")
                 if driver["use_coordinator"] else f"driver {suite.driver} (direct mode, no {USE_COORDINATOR})")
        return (f"{flags}: Megatron-LM's offline driver runs megatron-core's {driver['api']} "
                f"(megatron.core.inference.apis), which megatron-core {version} does not have")
    asked = {flag: field for flag, field in SAMPLING_FEATURES.items() if suite.model_args.get(flag)}
    missing = adapter.lacks_sampling_fields(asked.values()) if asked else []
    if missing:
        flags = ", ".join(flag for flag, field in asked.items() if field in missing)
        return f"{flags}: megatron-core {version}'s SamplingParams has no {', '.join(missing)}"
    if chunked_prefill(suite.model_args) and not adapter.supports_chunked_prefill():
        return f"{CHUNKED_PREFILL}: chunked prefill is not supported by megatron-core {version}"
    return None


# MODEL_ARGS flags that megatron-core takes as a SamplingParams field, where a release may lack the field
SAMPLING_FEATURES = {"--top-n-logprobs": "top_n_logprobs", "--stop-words": "stop_words"}


def async_sched_refusal(suite, release: tuple[int, int, int]) -> str | None:
    """Why this release cannot schedule the dynamic engine as the suite asks (None: it can)."""
    from logitsmatch.run.plan import ASYNC_SCHED, ASYNC_SCHED_SINCE, async_sched_mode

    if async_sched_mode(suite.model_args) is None or release[:2] >= ASYNC_SCHED_SINCE:
        return None
    return f"{ASYNC_SCHED}: async scheduling is not supported by megatron-core {'.'.join(map(str, release))}"


MAMBA_STATES_DTYPE_SINCE = (0, 17)  # MambaInferenceStateConfig's conv / SSM states dtypes


def mamba_states_refusal(suite, platform, release: tuple[int, int, int]) -> str | None:
    """Why this release cannot keep a hybrid's Mamba states in the dtypes the suite asks for (None: it can).

    Before 0.17 the states follow the parameters: only states in the run's own dtype can be honoured."""
    from logitsmatch.run.plan import MAMBA_STATES_FLAGS, mamba_states_dtype

    run_dtype = platform.dtype(suite.model_args)
    wanted = mamba_states_dtype(suite.model_args, run_dtype)
    if release[:2] >= MAMBA_STATES_DTYPE_SINCE or set(wanted.values()) == {run_dtype}:
        return None
    asked = ", ".join(f"{flag} {suite.model_args[flag]}" for state, flag in MAMBA_STATES_FLAGS.items()
                      if wanted[state] != run_dtype)
    return (f"{asked}: megatron-core {'.'.join(map(str, release))} keeps the Mamba states in the parameters' dtype "
            f"({run_dtype}); separate states dtypes arrive in megatron-core 0.17")


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


def schedule_record(schedule: dict) -> dict:
    """The schedule as provenance records it (the reference's source, not its tokens)."""
    record = {key: value for key, value in schedule.items() if key != "reference"}
    if "reference" in schedule:
        record["reference"] = schedule["reference"]["source"]
    return record


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


@dataclass
class SuiteRun:
    """What the tasks of one run have settled so far; each task fills in its part and hands it on."""

    project: Path
    results_root: Path | None
    toolchain: Any = None
    label: str = ""
    suite: Any = None
    platform: Any = None
    release: tuple[int, int, int] = (0, 0, 0)
    batch_invariant: Any = None
    timeout: float = 0.0
    started: float = 0.0
    tokenizer: Any = None
    choice: Any = None
    weights: Weights | None = None
    target: Path | None = None
    run: Any = None
    plan: Any = None
    flags: Any = None
    wall_s: float = 0.0
    ranks: Any = None
    inputs_summary: Any = None
    inputs: Any = None
    provenance: Any = None

    @property
    def platform_label(self) -> str:
        return self.platform.label(self.suite.model_args, self.suite.world_size)


def resolve(state: SuiteRun, args) -> SuiteRun:
    """The toolchain (this venv's, unless a candidate), the suite, the platform at its layout and schedule, and
    megatron-core's answers to what the run asks of it; refused here before any weights are written."""
    from logitsmatch import layouts
    from logitsmatch.run.platforms import get_platform
    from logitsmatch.suites import load_suite
    from logitsmatch.toolchains import get_toolchain

    state.toolchain = get_toolchain(state.project / "pyproject.toml", args.toolchain)
    state.suite = suite = load_suite(state.project, args.suite)  # an unknown suite first, whatever this venv holds
    if args.candidate is None:
        verify_toolchain(state.toolchain)
    state.label = args.candidate or state.toolchain.name
    layout = layouts.parse(args.layout) if args.layout else None
    platform = get_platform(args.platform, tensor_parallel=args.tensor_parallel_size, dtype=args.dtype, layout=layout,
                            schedule=args.schedule)
    state.release = release = installed_release()
    from logitsmatch.rank.adapters import check_supported, for_installed_megatron, installed_megatron_version

    check_supported(installed_megatron_version())  # a release no adapter speaks: one clear line now, not a dead rank
    with warnings.catch_warnings():  # megatron's import-time notices (no Apex, no TE) belong to the ranks' logs
        warnings.simplefilter("ignore")
        # Asking the release what it has imports megatron-core (seconds): only for the questions that need it.
        from logitsmatch.run.plan import chunked_prefill, offline_driver, prefix_caching

        asks_release = (platform.schedule == "chunked" or args.batch_invariant or prefix_caching(suite.model_args)
                        or any(suite.model_args.get(flag) for flag in SAMPLING_FEATURES)
                        or chunked_prefill(suite.model_args) or offline_driver(suite.model_args, suite.driver))
        adapter = for_installed_megatron() if asks_release else None
        run_layout = platform.layout(suite.model_args, suite.world_size)
        refusal = (layouts.unsupported(run_layout, release) or mamba_states_refusal(suite, platform, release)
                   or async_sched_refusal(suite, release)
                   or schedule_refusal(adapter, platform, run_layout, release)
                   or (feature_refusal(adapter, suite, release) if adapter else None))
    if refusal:  # before any weights are written or run folder made
        raise Unsupported(f"suite {suite.name} not run: {refusal}")
    state.batch_invariant = batch_invariant_decision(args.batch_invariant, adapter, platform, release)
    if state.batch_invariant.get("applied"):
        platform = platform.configured(batch_invariant=True)
    state.platform = platform
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise BadInput(f"--timeout must be a positive number of seconds, got {args.timeout}")
    state.timeout = args.timeout or suite.timeout_s
    return state


def prepare(state: SuiteRun, args) -> SuiteRun:
    """The tokenizer, the checkpoint choice and its weights; the run's one deadline starts here."""
    from logitsmatch.rank.checkpoint import read_checkpoint_args
    from logitsmatch.run.plan import choose_checkpoint, tokenizer_spec

    state.started = time.monotonic()
    user_checkpoint = bool(args.checkpoint or state.suite.arg("--load"))
    state.tokenizer = tokenizer_spec(state.suite, state.project, user_checkpoint, args.tokenizer_model)
    state.choice = choose_checkpoint(state.suite, state.project, args.checkpoint, state.tokenizer,
                                     read_checkpoint_args)
    state.weights = prepare_weights(state.choice, state.timeout)
    return state


def plan(state: SuiteRun, args) -> SuiteRun:
    """The run folder and the ranks' plan (capture, batch-invariant mode, the forward schedule's reference), written
    for the ranks and told to people."""
    from logitsmatch import layouts
    from logitsmatch.run.plan import build_plan, capture_spec
    from logitsmatch.run.runfiles import RunDir

    suite, platform, release = state.suite, state.platform, state.release
    state.target = paths.result_path(suite.name, state.platform_label, state.label, state.results_root)
    state.run = RunDir.create(state.target.parent)
    state.plan, state.flags = build_plan(suite, platform, state.choice, state.weights.checkpoint_dir, state.tokenizer,
                                         args.bind_host, release)
    if args.capture is not None:
        state.plan["capture"] = capture_spec(args.capture)
    state.plan["parallel"]["batch_invariant_mode"] = bool(state.batch_invariant.get("applied"))
    if not state.plan["schedule"]["engine"]:
        state.plan["schedule"]["reference"] = forward_reference(suite, platform, state.label, state.toolchain.name,
                                                                state.project, bool(args.candidate))
    state.run.write_plan(state.plan)
    announce(suite, state.label, state.toolchain, bool(args.candidate), platform, state.plan, state.weights,
             state.flags)
    logger.info(describe_schedule(state.plan["schedule"]))
    inference = state.plan["inference"]
    if inference["enable_chunked_prefill"] and not state.plan["schedule"]["chunked_prefill_tokens"]:
        logger.info(f"chunked prefill (the suite's --enable-chunked-prefill): at most {inference['max_tokens']} "
                    f"tokens per step")
    if state.plan["inference"]["static_engine"] and state.plan["schedule"]["engine"]:
        inference = state.plan["inference"]
        batch = inference["max_requests"]
        shape = ("as one batch" if batch >= len(state.plan["prompts"])
                 else f"in consecutive batches of {batch} (--inference-max-requests)")
        warmup = " after the driver's warmup request" if inference["static_warmup"] else ""
        logger.info(f"static engine (--use-legacy-static-engine): the prompts {shape}{warmup}, no coordinator")
    if state.batch_invariant.get("why"):
        logger.info(f"--batch-invariant: {state.batch_invariant['why']}")
    if "routing_indices" in suite.metrics and state.plan["moe"] and not layouts.records_routing(release):
        logger.info(layouts.routing_note(release))
    return state


def launch(state: SuiteRun, args) -> SuiteRun:
    """Start the ranks with what is left of the deadline and report what they left behind."""
    from logitsmatch.run import launcher
    from logitsmatch.run.plan import launch_env

    # One deadline for the whole run: what preparing the weights used is gone from the ranks' share.
    remaining = max(state.timeout - (time.monotonic() - state.started), 1.0)
    env = launch_env(state.suite, state.platform, state.run, args.bind_host)
    state.wall_s = launcher.launch(state.run, state.plan["world_size"], remaining, env)
    state.ranks = report_ranks(state.run, state.plan, state.wall_s)
    state.inputs_summary, state.inputs = harness_inputs(state.run, state.plan)
    return state


def collect(state: SuiteRun, args) -> SuiteRun:
    """The run's provenance: hardware, toolchain, platform decisions, weights, network, timings, inputs."""
    from logitsmatch import provenance

    plan, ranks, weights = state.plan, state.ranks, state.weights
    state.provenance = provenance.collect(
        hardware=ranks_hardware(state.inputs["ranks"]),
        toolchain=state.label,
        candidate_of=state.toolchain.name if args.candidate else None,
        suite=state.suite.name,
        suite_config_sha256=state.suite.config_digest(),
        platform=state.platform_label,
        platform_decisions={
            **plan["platform"],
            "dtype": plan["dtype"],
            "parallel": plan["parallel"],
            "moe": plan["moe"],
        },
        weights=weights.record,
        stand_ins=ranks["stand_ins"],
        flags=state.flags.to_dict(),
        network=ranks["network"],
        timings_s={"weights_prepare": weights.prepare_s, "launch_wall": state.wall_s, **ranks["timings_s"]},
        memory=ranks["memory"],
        request_schedule=request_schedule(plan),
        schedule=schedule_record(plan["schedule"]),
        batch_invariant=state.batch_invariant,
        harness_inputs=state.inputs_summary,
        execution=provenance.execution(),
    )
    return state


def publish_and_judge(state: SuiteRun, args) -> int:
    """Publish the result under the triple's lock, then judge it against the golden of its hardware class (unless
    --no-compare): a concurrent run of the same triple publishes before or after, never between."""
    from logitsmatch.run.launcher import publish_lock

    target = state.target
    with publish_lock(target.parent):
        publish(state.run, target, state.provenance, state.inputs)
        if not args.keep_run_dir:
            shutil.rmtree(state.run.root, ignore_errors=True)
        logger.info(f"result: {target}")
        if args.no_compare:
            return EXIT_OK
        from logitsmatch.hardware import golden_of_class
        from logitsmatch.judge.verdict import judge_against_golden

        golden = golden_of_class(
            paths.golden_path(state.suite.name, state.platform_label, state.toolchain.name),
            state.provenance["hardware"]["class"],
        )
        return judge_against_golden(state.suite, target, golden, state.toolchain.name)


WORKFLOW = (resolve, prepare, plan, launch, collect, publish_and_judge)


def run_suite(args, results_root: Path | None = None) -> int:
    """Run, publish under ``results_root`` (default: the results tree), then judge unless --no-compare.

    The run ends with the process that started it (nox, a shell, a CI job): if that one dies, even
    by SIGKILL, this process gets SIGTERM, which ends every process of the run (exit 130).
    """
    import signal

    from logitsmatch.lifetime import die_with_parent

    die_with_parent(sig=signal.SIGTERM)
    return execute(WORKFLOW, args, SuiteRun(paths.project_root(), results_root))
