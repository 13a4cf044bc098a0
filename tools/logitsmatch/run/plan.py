"""Resolve a suite x toolchain x platform into the run plan the ranks execute.

The plan is plain JSON: every decision (architecture, checkpoint, tokenizer,
dtype, KV buffer, bind address) is made here, once, in the harness, and
recorded; the rank worker only carries it out.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from logitsmatch import layouts, schedules
from logitsmatch.checkpoint_args import architecture_from_args, resolve_checkpoint_dir
from logitsmatch.errors import BadInput, Unsupported
from logitsmatch.files import read_input
from logitsmatch.layouts import Layout
from logitsmatch.model_args import FLAGS, FlagReport, classify, switched_on
from logitsmatch.run.platforms import Platform
from logitsmatch.run.runfiles import RunDir
from logitsmatch.suites import OFFLINE_INFERENCE, Suite, load_architecture
from logitsmatch.vocab import NUM_SPECIAL_TOKENS

BLOCK_SIZE_TOKENS = 256


@dataclass
class CheckpointChoice:
    """Where the weights come from: a user checkpoint, or a synthetic one to generate."""

    load_path: Path | None  # None: synthetic
    architecture: dict
    synthetic_spec: dict | None


def tokenizer_spec(suite: Suite, project: Path, user_checkpoint: bool, override: str | None) -> dict:
    """TikTokenizer file and its vocab size (1000 specials + the file's entries)."""
    if suite.arg("--tokenizer-type", "TikTokenizer") != "TikTokenizer":
        raise BadInput(f"suite {suite.name}: only --tokenizer-type TikTokenizer is supported")
    path = override or (suite.arg("--tokenizer-model") if user_checkpoint else None)
    path = Path(path) if path else project / suite.tokenizer_model
    try:
        entries = json.loads(read_input(path, "tokenizer model"))
    except (ValueError, RecursionError):
        raise BadInput(f"tokenizer model is not valid JSON: {path}") from None
    if not isinstance(entries, list) or len(entries) < 256:
        raise BadInput(f"tokenizer model {path}: expected a JSON list of at least 256 tiktoken ranks")
    return {
        "path": str(path),
        "pattern": str(suite.arg("--tiktoken-pattern", "v2")),
        "vocab_size": NUM_SPECIAL_TOKENS + len(entries),
        "num_special_tokens": NUM_SPECIAL_TOKENS,
    }


def choose_checkpoint(suite: Suite, project: Path, checkpoint: str | None, tokenizer: dict,
                      read_stored_args: Callable[[Path], argparse.Namespace | None]) -> CheckpointChoice:
    """A user checkpoint (--checkpoint, or the suite's --load with CHECKPOINT_LOAD_PATH set) or synthetic.

    A user checkpoint's stored args take torch to read; the caller passes that reader
    (``rank.checkpoint.read_checkpoint_args``), so that planning imports no rank module."""
    load = checkpoint or suite.arg("--load")
    if load:
        directory = resolve_checkpoint_dir(load)
        args = read_stored_args(directory)
        if args is None:
            raise BadInput(f"checkpoint {directory} stores no 'args'; logitsmatch needs them (--use-checkpoint-args)")
        return CheckpointChoice(directory, architecture_from_args(args), None)
    return synthetic_checkpoint(suite, project, tokenizer)


def synthetic_checkpoint(suite: Suite, project: Path, tokenizer: dict) -> CheckpointChoice:
    """The suite's synthetic checkpoint: its architecture and the spec its weights are written from."""
    arch = load_architecture(project, suite.synthetic_model)
    spec = {
        "architecture": arch,
        "vocab_size": tokenizer["vocab_size"],
        "num_special_tokens": tokenizer["num_special_tokens"],
        "seed": suite.synthetic_seed,
    }
    return CheckpointChoice(None, arch, spec)


def expected_weights(suite: Suite, project: Path) -> dict:
    """The weights a run of the suite uses now, as provenance records them (without any rank work):
    the checkpoint the suite's --load names when its variables are set, else its synthetic spec."""
    load = suite.arg("--load")
    if load:
        return {"source": "checkpoint", "path": str(resolve_checkpoint_dir(load))}
    from logitsmatch.run.synthetic_weights import GENERATOR_VERSION

    choice = synthetic_checkpoint(suite, project, tokenizer_spec(suite, project, False, None))
    return {"source": "synthetic", "spec": choice.synthetic_spec, "generator_version": GENERATOR_VERSION}


def check_shape(suite: Suite, arch: dict, synthetic: bool = False) -> dict[str, str]:
    """The suite's architecture flags must describe the model actually loaded.

    A synthetic checkpoint the suite declares ``scaled_down`` may differ in its sizes (layers,
    widths, heads), never in its layout (experts, top-k, router, norm, RoPE, ...): the returned
    {flag: why} lists each size flag not applied, for the flag report.
    """
    not_applied = {}
    for compared in ("size", "layout"):
        for flag, spec in FLAGS.items():
            if spec.compared != compared:
                continue
            key = spec.architecture
            wanted = suite.model_args.get(flag)
            if wanted is None or (key not in arch and flag != "--num-experts"):
                continue  # a user checkpoint's stored args may not name it; megatron then uses its default
            if arch.get(key) == spec.read(wanted):
                continue
            if synthetic and suite.scaled_down and compared == "size":
                not_applied[flag] = f"{suite.scaled_down} ({key}={arch.get(key)})"
                continue
            raise BadInput(f"suite {suite.name} says {flag} {wanted} but the checkpoint has {key}={arch.get(key)}")
    return not_applied


def platform_flags(model_args: dict, platform: Platform, decision) -> FlagReport:
    """The flag report, with the platform's own reasons for what it could not apply here."""
    flags = classify(model_args, platform.honours, platform.label(model_args))
    for flag in decision.applied:
        if flag in flags.not_applied:
            del flags.not_applied[flag]
            flags.applied.append(flag)
    for flag, why in decision.not_applied.items():
        if flag in flags.applied:
            flags.applied.remove(flag)
        flags.not_applied[flag] = why
    return flags


def build_plan(
    suite: Suite,
    platform: Platform,
    choice: CheckpointChoice,
    checkpoint_dir: Path,
    tokenizer: dict,
    bind_host: str,
    megatron_version: tuple[int, int, int] | None = None,
) -> tuple[dict, FlagReport]:
    """The plan, and the flag report; ``megatron_version`` (the toolchain's) refuses a layout it cannot run."""
    args = suite.model_args
    arch = dict(choice.architecture)
    scaled = check_shape(suite, arch, synthetic=choice.load_path is None)
    if "--max-position-embeddings" in args:
        arch["max_position_embeddings"] = int(args["--max-position-embeddings"])
    layout = platform.layout(args, suite.world_size)
    layout.check(arch, f"suite {suite.name}")
    if megatron_version is not None:
        refusal = layouts.unsupported(layout, megatron_version)
        if refusal:
            raise Unsupported(f"suite {suite.name} not run: {refusal}")
    decision = platform.decide(args, arch, layout)
    driver = offline_driver(args, suite.driver)
    flags = platform_flags(args, platform, decision)
    for flag, why in scaled.items():
        flags.applied.remove(flag)
        flags.not_applied[flag] = why
    max_seq = int(args.get("--inference-max-seq-length", 4096))
    platform_plan = dict(decision.plan)
    if platform.label(args, suite.world_size) != platform.profile:
        suite_layout = layouts.of_suite(args, suite.world_size, f"suite {suite.name}")
        platform_plan["overrides"] = {
            "tensor_parallel": {"suite": suite_layout.tensor, "run": layout.tensor},
            "layout": {"suite": suite_layout.name, "run": layout.name},
            "dtype": {"run": decision.dtype, "command_line": platform.dtype_override},
        }
    schedule = schedules.plan_entry(platform.schedule, suite.prompts)
    static = switched_on(args.get(STATIC_ENGINE))
    static_batch = args.get(STATIC_BATCH)
    # StaticInferenceEngine(legacy=False), the static driver's default, caps its dynamic context at the batch size
    max_requests = args.get("--inference-dynamic-batching-max-requests", None if static else static_batch)
    max_requests = None if max_requests is None else int(max_requests)
    if static and platform.schedule not in ("together", "forward"):
        raise Unsupported(f"suite {suite.name} not run: schedule {platform.schedule}: the static engine "
                          f"({STATIC_ENGINE}) takes the prompts as one batch (schedule together)")
    if static and (int(args.get("--top-n-logprobs", 0)) or "--stop-words" in args):
        raise Unsupported(f"suite {suite.name} not run: --top-n-logprobs and --stop-words are wired into the "
                          f"dynamic engine only here, not the static engine ({STATIC_ENGINE})")
    chunk = schedule["chunked_prefill_tokens"] or chunked_prefill(args)
    if chunk is not None:  # megatron-core splits prefill at the context's max_tokens, which must hold max_requests
        max_requests = min(max_requests or chunk, chunk)
    plan = {
        "suite": suite.name,
        "platform": platform_plan,
        "dtype": decision.dtype,
        "parallel": {
            "tensor": layout.tensor,
            "pipeline": layout.pipeline,
            "data": layout.data,
            "expert": layout.expert,
            "expert_tensor": layout.etp,
            "layout": layout.name,
            "sequence_parallel": decision.sequence_parallel,
            "deterministic_mode": switched_on(args.get("--deterministic-mode")),
            "inference_fuse_tp_communication": decision.fuse_tp_communication,
            "attention_backend": decision.attention_backend,
        },
        "moe": moe_plan(args, arch, decision),
        "world_size": layout.world_size,
        "architecture": arch,
        "vocab_size": tokenizer["vocab_size"],
        "seed": suite.synthetic_seed,
        "tokenizer": tokenizer,
        "checkpoint_dir": str(checkpoint_dir),
        "prompts": suite.prompts,
        "schedule": schedule,
        "sampling": {
            "temperature": float(args.get("--temperature", 1.0)),
            "top_k": int(args.get("--top_k", 0)),
            "top_p": float(args.get("--top_p", 0.0)),
            "return_log_probs": switched_on(args.get("--return-log-probs", False)),
            "num_tokens_to_generate": int(args.get("--num-tokens-to-generate", 30)),
            "top_n_logprobs": int(args.get("--top-n-logprobs", 0)),
            "stop_words": stop_words(args),
            **termination(args),
        },
        "inference": {
            "max_sequence_length": max_seq,
            "buffer_size_gb": platform.kv_buffer_gb(args),
            "max_tokens": chunk or int(args.get(MAX_TOKENS, DEFAULT_MAX_TOKENS)),
            "block_size_tokens": BLOCK_SIZE_TOKENS,
            # the static batch: --inference-max-requests (Megatron's default 8, here at least every prompt)
            "max_requests": max(len(suite.prompts), 8) if static_batch is None else int(static_batch),
            # --inference-dynamic-batching-max-requests: the context's cap on concurrent requests
            "context_max_requests": max_requests,
            "enable_chunked_prefill": chunk is not None,
            "prefix_caching": prefix_caching(args),
            "async_sched_mode": async_sched_mode(args),
            "mamba_states_dtype": mamba_states_dtype(args, decision.dtype),
            "static_engine": static,  # megatron-core's legacy static engine, one batch, no coordinator
            # Megatron's static driver warms its CUDA graphs up with one request before the batch
            "static_warmup": static and str(args.get("--cuda-graph-impl", "none")) == "local",
            "offline_driver": driver,  # megatron-core's MegatronLLM / MegatronAsyncLLM
            "use_flashinfer_fused_rope": decision.use_flashinfer_fused_rope,
            "enable_cuda_graph": False,  # not wired yet: reported as not applied (platforms.NOT_WIRED)
            # no coordinator (static engine, offline direct mode): the requests reach the engine together anyway
            "hold_requests": None if schedule["one_at_a_time"] or static or (driver and not driver["use_coordinator"])
            else hold_requests(layout, len(schedule["submit"])),
        },
        "network": {"bind_host": bind_host, "coordinator_port": None},
    }
    if "--output-every-n-results" in args:
        plan["output_every_n_results"] = int(args["--output-every-n-results"])
    return plan, flags


def termination(args: dict) -> dict:
    """--termination-id, where given: the id that ends a request in place of the tokenizer's end-of-document
    (-1: none does, every request generates --num-tokens-to-generate tokens)."""
    value = args.get("--termination-id")
    return {} if value is None else {"termination_id": int(value)}



def hold_requests(layout: Layout, prompts: int) -> int | None:
    """How many requests each engine holds and then adds together (None: each as it arrives).

    The client submits every prompt at once, but the coordinator forwards them to an engine one
    message at a time: an engine that steps between two arrivals prefills them in different
    batches, and a different batch shape can move fp32 results in the last bits. With one engine
    (DP1) every prompt goes to it, so it holds them until all ``prompts`` have arrived (every rank
    of the engine sees the same messages in the same order) and the schedule no longer depends on
    timing. With several engines no engine knows its share in advance: the coordinator picks by
    registration order (0.15, 0.16) or load (0.19), and an engine waiting for a share it never gets
    would hang. There nothing is held; the DP suites give each engine at most one prompt (a single
    request cannot be split), so their schedules are timing-independent too. A DP run with more
    prompts than engines (an invariance layout, say) is, and its provenance says so.
    """
    return prompts if layout.data == 1 else None


STATIC_ENGINE = "--use-legacy-static-engine"
STATIC_BATCH = "--inference-max-requests"


def stop_words(args: dict) -> list[str] | None:
    """--stop-words as Megatron's driver receives it: its launcher writes the value into a shell command line
    and argparse (nargs='+') takes the shell words, so '"the"' is the one word ``the``."""
    import shlex

    value = args.get("--stop-words")
    if value is None:
        return None
    try:
        words = shlex.split(str(value))
    except ValueError as error:
        raise BadInput(f"MODEL_ARGS --stop-words {value!r:.60}: not shell words ({error})") from None
    if not words or not all(words):
        raise BadInput(f"MODEL_ARGS --stop-words {value!r:.60}: names no word, or an empty one")
    return words


MAMBA_STATES_FLAGS = {"conv": "--mamba-inference-conv-states-dtype", "ssm": "--mamba-inference-ssm-states-dtype"}
MAMBA_STATES_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # Megatron-LM's choices


def mamba_states_dtype(args: dict, run_dtype: str) -> dict[str, str]:
    """The Mamba conv and SSM inference states' dtypes (a hybrid's; Megatron-LM's default: the run's dtype)."""
    states = {}
    for state, flag in MAMBA_STATES_FLAGS.items():
        value = str(args.get(flag, "")) or None
        if value is not None and value not in MAMBA_STATES_DTYPES:
            raise BadInput(f"{flag} {value!r} is not one of {', '.join(MAMBA_STATES_DTYPES)}")
        states[state] = MAMBA_STATES_DTYPES[value] if value else run_dtype
    return states
CHUNKED_PREFILL = "--enable-chunked-prefill"
MAX_TOKENS = "--inference-dynamic-batching-max-tokens"
DEFAULT_MAX_TOKENS = 16384  # megatron-core's DynamicInferenceContext default, and Megatron-LM's when the flag is unset


def chunked_prefill(args: dict) -> int | None:
    """Tokens per prefill step where the suite asks for chunked prefill (None: off, as by default).

    Megatron-LM's gpt_dynamic_inference.py passes --inference-dynamic-batching-max-tokens as the context's
    max_tokens and --enable-chunked-prefill to the engine (0.15, 0.16) or InferenceConfig (0.17+): the engine then
    prefills a prompt longer than max_tokens in chunks of at most that many tokens per step."""
    if not switched_on(args.get(CHUNKED_PREFILL)):
        return None
    return int(args.get(MAX_TOKENS, DEFAULT_MAX_TOKENS))


ASYNC_SCHED = "--inference-dynamic-batching-async-sched-mode"
ASYNC_SCHED_MODES = ("legacy", "async")  # megatron-core's AsyncScheduleMode; legacy its default
ASYNC_SCHED_SINCE = (0, 19)  # InferenceConfig.async_sched_mode (not in 0.18.x)


def async_sched_mode(args: dict) -> str | None:
    """The dynamic engine's scheduling order (None: not asked, the release's own; "async": prepare the next step
    before resolving this one's requests)."""
    if ASYNC_SCHED not in args:
        return None
    mode = str(args[ASYNC_SCHED])
    if mode not in ASYNC_SCHED_MODES:
        raise BadInput(f"{ASYNC_SCHED} {mode!r} is not one of {', '.join(ASYNC_SCHED_MODES)}")
    return mode


PREFIX_CACHING = "--inference-dynamic-batching-prefix-caching"
EVICTION_POLICIES = ("ref_zero", "lru")  # Megatron-LM's choices; ref_zero its default
COORDINATOR_POLICY = f"{PREFIX_CACHING}-coordinator-policy"
COORDINATOR_POLICIES = ("longest_prefix", "first_prefix_block", "load_balanced")  # Megatron-LM's choices


def prefix_caching(args: dict) -> dict | None:
    """KV-block sharing between requests with the same prompt prefix (None: off, as by default).

    ``coordinator_policy`` (only where the suite names one: each release has its own default) is how the
    data-parallel coordinator routes a request among the engines, by prefix affinity or by load."""
    if not switched_on(args.get(PREFIX_CACHING)):
        return None
    policy = str(args.get(f"{PREFIX_CACHING}-eviction-policy", EVICTION_POLICIES[0]))
    if policy not in EVICTION_POLICIES:
        raise BadInput(f"{PREFIX_CACHING}-eviction-policy {policy!r} is not one of {', '.join(EVICTION_POLICIES)}")
    caching = {"eviction_policy": policy}
    if COORDINATOR_POLICY in args:
        routing = str(args[COORDINATOR_POLICY])
        if routing not in COORDINATOR_POLICIES:
            raise BadInput(f"{COORDINATOR_POLICY} {routing!r} is not one of {', '.join(COORDINATOR_POLICIES)}")
        caching["coordinator_policy"] = routing
    return caching


USE_COORDINATOR, ASYNC_MODE = "--use-coordinator", "--async-mode"


def offline_driver(args: dict, driver: str | None = None) -> dict | None:
    """Megatron-LM's offline driver (examples/inference/offline_inference.py), which the suite's
    --use-coordinator / --async-mode name, or its sidecar's ``driver: offline_inference`` where the flags do
    not: megatron-core's MegatronLLM (sync) or MegatronAsyncLLM (async). Behind the coordinator the API drives
    the engines with its own coordinator and client; without it (the driver's default, "sync, direct"),
    MegatronLLM calls its one engine's ``generate`` in-process. None: logitsmatch's own ZMQ driver."""
    use_coordinator, async_mode = switched_on(args.get(USE_COORDINATOR)), switched_on(args.get(ASYNC_MODE))
    if not (use_coordinator or async_mode or driver == OFFLINE_INFERENCE):
        return None
    if async_mode and not use_coordinator:
        raise BadInput(f"{ASYNC_MODE} without {USE_COORDINATOR}: megatron-core's MegatronAsyncLLM runs only "
                       "behind the coordinator")
    return {"api": "MegatronAsyncLLM" if async_mode else "MegatronLLM", "use_coordinator": use_coordinator}


def moe_plan(args: dict, arch: dict, decision) -> dict | None:
    """The MoE settings the ranks build (None for a dense model)."""
    if not arch.get("num_experts"):
        return None
    return {
        "token_dispatcher_type": str(args.get("--moe-token-dispatcher-type", "allgather")),
        "grouped_gemm": decision.moe_grouped_gemm,
        "router_load_balancing_type": str(args.get("--moe-router-load-balancing-type", "aux_loss")),
        "enable_routing_replay": switched_on(args.get("--moe-enable-routing-replay", False)),
        "pad_experts_for_cuda_graph_inference": switched_on(args.get("--moe-pad-experts-for-cuda-graph-inference")),
    }


# The family's layouts of a dense model: logitsmatch invariance compares them by default.
DENSE_LAYOUTS = "tp8,pp8,tp2pp2dp2,dp8,tp1"


def default_invariance_layouts(suite: Suite, project: Path) -> tuple[str, dict[str, str]]:
    """The layouts ``logitsmatch invariance`` compares unless told, and those left out with why: of the family's
    (a dense model) or the model's own layout and one rank (MoE: experts cannot re-split freely), the ones the
    suite's architecture can take (the tiny sibling's 2 layers cannot make 8 pipeline stages)."""
    arch = load_architecture(project, suite.synthetic_model)
    if arch.get("num_experts"):
        candidates = f"{layouts.of_suite(suite.model_args, suite.world_size, suite.name).name},tp1"
    else:
        candidates = DENSE_LAYOUTS
    fit, left_out = [], {}
    for name in candidates.split(","):
        layout = layouts.parse(name)
        try:
            layout.check(arch, f"suite {suite.name}")
        except BadInput as exc:
            left_out[name] = str(exc).split(f"layout {layout.name}: ", 1)[-1]
            continue
        fit.append(name)
    return ",".join(fit), left_out


CAPTURE_VALUE_BUDGET_BYTES = 200_000_000  # values kept per run (docs/capture_format.md)


def capture_spec(decode_steps: int, budget: int = CAPTURE_VALUE_BUDGET_BYTES) -> dict:
    """``plan["capture"]`` for ``logitsmatch run --capture``: prefill + ``decode_steps`` decode steps,
    digests on every rank, the values of the real token rows on each data-parallel engine's first rank (which
    engine serves a request varies from run to run; explain compares the engines that served it) within
    ``budget``, shared between them."""
    if decode_steps < 0:
        raise BadInput(f"--capture takes the number of decode steps to record (>= 0), got {decode_steps}")
    return {"decode_steps": decode_steps, "value_ranks": [], "value_engine_first": True, "value_budget_bytes": budget}


def comparable_plan(plan: dict) -> dict:
    """The plan without what differs between any two runs (folders, ports): what ``explain`` compares."""
    kept = {key: value for key, value in plan.items() if key not in ("checkpoint_dir", "network", "capture")}
    kept["tokenizer"] = {key: value for key, value in plan.get("tokenizer", {}).items() if key != "path"}
    return kept


def launch_env(suite: Suite, platform: Platform, run: RunDir, bind_host: str) -> dict[str, str]:
    """ENV_VARS of the suite plus what keeps ranks on loopback and single-threaded on CPU."""
    env = dict(suite.env_vars)
    env["TMPDIR"] = str(run.tmp)
    env["TORCH_EXTENSIONS_DIR"] = str(run.torch_extensions)
    if platform.stand_ins:
        env["OMP_NUM_THREADS"] = "1"
    if bind_host.startswith("127.") or bind_host == "localhost":
        loopback = os.environ.get("LOGITSMATCH_LOOPBACK_IFNAME", "lo")
        env["GLOO_SOCKET_IFNAME"] = loopback
        if platform.device == "cuda":
            # one node: NCCL's socket bootstrap stays on loopback too (NVLink/P2P carry the data)
            env["NCCL_SOCKET_IFNAME"] = os.environ.get("NCCL_SOCKET_IFNAME", loopback)
    return env
