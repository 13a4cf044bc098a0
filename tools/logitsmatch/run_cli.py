"""`logitsmatch run`: one suite on this venv's toolchain, judged against its golden.

Prints the toolchain, the flags the platform does not apply, the coordinator
address and the stand-ins in use, then the verdict. The result and its
provenance are published into the results tree only when every rank finished;
a failed or interrupted run leaves nothing that could be taken for a result.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.golden_io import write_json_atomic


def configure(parser) -> None:
    parser.add_argument("suite", help="suite folder name under suites/")
    parser.add_argument("--toolchain", required=True, help="toolchain name from pyproject.toml (must match this venv)")
    parser.add_argument("--platform", default=None, help="cpu, gpu, h100 or dgx_h100 (default: detected)")
    parser.add_argument("--tensor-parallel-size", type=int, default=None, metavar="N",
                        help="override the suite's TP size (results and goldens are then labelled <platform>-tpN-<dtype>)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16", "fp32", "bf16", "fp16"),
                        help="override the dtype the platform takes from the suite (labelled like --tensor-parallel-size)")
    parser.add_argument("--checkpoint", default=None, help="torch_dist checkpoint to load instead of synthetic weights")
    parser.add_argument("--tokenizer-model", default=None, help="TikTokenizer vocab file (with --checkpoint)")
    parser.add_argument("--timeout", type=float, default=None, help="deadline in seconds (default: the suite's)")
    parser.add_argument("--bind-host", default="127.0.0.1", help="address the coordinator and engines bind to")
    parser.add_argument("--no-compare", action="store_true", help="run and publish the result, skip the golden check")
    parser.add_argument("--keep-run-dir", action="store_true", help="keep per-rank logs of a successful run")
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


def new_run_dir(result_dir: Path) -> Path:
    run_dir = result_dir / ".runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (run_dir / "status").mkdir(parents=True)
    (run_dir / "tmp").mkdir()
    return run_dir


def publish(run_dir: Path, result_dir: Path, provenance: dict) -> Path:
    """Move a finished run's result into results/<suite>/<platform>/<toolchain>/, atomically."""
    result = json.loads((run_dir / "result.json").read_text())
    target = result_dir / "result.json"
    write_json_atomic(paths.provenance_path(target), provenance)
    write_json_atomic(target, result)
    return target


def main(args) -> int:
    from logitsmatch import provenance as provenance_module
    from logitsmatch.checkpoint import resolve_checkpoint_dir
    from logitsmatch.launcher import launch, publish_lock
    from logitsmatch.plan import build_plan, choose_checkpoint, launch_env, tokenizer_spec
    from logitsmatch.platforms import get_platform
    from logitsmatch.suites import load_suite
    from logitsmatch.synthetic_weights import ensure_checkpoint
    from logitsmatch.toolchains import get_toolchain

    project = paths.project_root()
    toolchain = get_toolchain(project / "pyproject.toml", args.toolchain)
    if args.candidate is None:
        verify_toolchain(toolchain)
    label = args.candidate or toolchain.name
    suite = load_suite(project, args.suite)
    platform = get_platform(args.platform, tensor_parallel=args.tensor_parallel_size, dtype=args.dtype).for_suite(suite.model_args)
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        raise BadInput(f"--timeout must be a positive number of seconds, got {args.timeout}")
    timeout = args.timeout or suite.timeout_s

    user_checkpoint = bool(args.checkpoint or suite.arg("--load"))
    try:
        tokenizer = tokenizer_spec(suite, project, user_checkpoint, args.tokenizer_model)
    except OSError as exc:  # a directory, unreadable file, ... (not found is already a BadInput)
        raise BadInput(f"tokenizer model {exc.filename}: {exc.strerror or exc}") from None
    choice = choose_checkpoint(suite, project, args.checkpoint, tokenizer)
    started = time.monotonic()
    if choice.load_path is None:
        cached, weights_digest = ensure_checkpoint(choice.synthetic_spec, paths.cache_root(), timeout)
        checkpoint_dir = resolve_checkpoint_dir(cached)
        weights = {"source": "synthetic", "spec": choice.synthetic_spec, "sha256": weights_digest}
    else:
        checkpoint_dir = choice.load_path
        weights = {"source": "checkpoint", "path": str(choice.load_path)}
    weights_s = time.monotonic() - started

    result_dir = paths.result_dir(suite.name, platform.name, label)
    run_dir = new_run_dir(result_dir)
    plan, flags = build_plan(suite, platform, choice, checkpoint_dir, tokenizer, run_dir, args.bind_host)
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))

    print(f"[logitsmatch] suite {suite.name} | toolchain {label} | platform {platform.name}")
    versions = provenance_module.package_versions()
    print(
        f"[logitsmatch] python {sys.version.split()[0]}, torch {versions['torch']}, "
        f"megatron-core {versions['megatron-core']}" + (f" (candidate {label} of {toolchain.name})" if args.candidate else "")
    )
    print(f"[logitsmatch] {plan['world_size']} ranks ({platform.backend}), dtype {plan['dtype']}, weights: {weights['source']}")
    for line in flags.lines(platform.name):
        print(f"[logitsmatch] {line.strip()}")
    sys.stdout.flush()

    # One deadline for the whole run: what preparing the weights used is gone from the ranks' share.
    remaining = max(timeout - (time.monotonic() - started), 1.0)
    wall_s = launch(run_dir / "plan.json", run_dir, plan["world_size"], remaining, launch_env(suite, platform, run_dir, args.bind_host))
    status = json.loads((run_dir / "status" / "rank-0.json").read_text())
    network = json.loads((run_dir / "status" / "network.json").read_text())
    stand_ins = json.loads((run_dir / "status" / "stand_ins.json").read_text())
    print(f"[logitsmatch] coordinator {network['coordinator']} | engine sockets on {network['bind_host']}")
    if network.get("coordinator_port_requested"):
        print(f"[logitsmatch] warning: coordinator port {network['coordinator_port_requested']} was taken; megatron-core chose another")
    for name in stand_ins:
        print(f"[logitsmatch] stand-in: {name}")
    print(f"[logitsmatch] ranks finished in {wall_s:.1f} s; phases (rank 0): "
          + ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in status["timings_s"].items()))

    record = provenance_module.collect(
        toolchain=label,
        candidate_of=toolchain.name if args.candidate else None,
        suite=suite.name,
        suite_config_sha256=suite.config_digest(),
        platform=platform.name,
        platform_decisions={**plan["platform"], "dtype": plan["dtype"], "parallel": plan["parallel"]},
        weights=weights,
        stand_ins=stand_ins,
        flags=flags.to_dict(),
        network=network,
        timings_s={"weights_prepare": weights_s, "launch_wall": wall_s, **status["timings_s"]},
    )
    with publish_lock(result_dir):  # a concurrent run of the same triple publishes before or after, never between
        target = publish(run_dir, result_dir, record)
        if not args.keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"[logitsmatch] result: {target}")
        if args.no_compare:
            return EXIT_OK
        from logitsmatch.verdict import judge_against_golden

        passed = judge_against_golden(suite, target, paths.golden_path(suite.name, platform.name, toolchain.name), toolchain.name)
    return EXIT_OK if passed else EXIT_DRIFT
