"""The GPU check (issue 6): the harness's GPU path on one GPU, judged against the CPU fp32 golden.

    python scripts/gpu_check.py --toolchain py3.12-torch2.11.0-mcore0.19.2 --out DIR

(``scripts/gpu_check.sh`` installs carried wheels first and calls this.) Every
figure is ``logitsmatch.judge.compare``'s, the one comparator. Steps:

1. probe the machine (GPUs, torch, the optional GPU packages, TF32 switches);
2. write the suite's synthetic checkpoint once, on the CPU (CUDA hidden), so the
   weights are those every platform loads (their sha256 is checked against the
   CPU golden's provenance);
3. for each dtype: ``logitsmatch run SUITE --platform P --tensor-parallel-size N
   --dtype D`` — the real CLI, ranks, ZMQ coordinator and client. Without a
   golden for the label (``h100-tp1-bf16`` ...) the result is recorded as one
   with ``logitsmatch record``; with one, the run is judged against it (a
   regression check of the GPU itself);
4. compare each GPU result with the CPU fp32 golden (``logitsmatch compare``,
   which exits 1 on drift — expected for bf16) and write the figures: tokens
   equal, first divergent generated token, max |Δlogprob| over the positions both
   runs share (prompt logprobs + generated ones before the first divergence);
5. write ``summary.md`` / ``summary.json`` and a ``bundle.tar.gz`` of goldens,
   provenance, reports and logs into ``--out``.

Exit 0 when every run finished and every existing golden still matched; drift
against the CPU golden is reported, not a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT / "tools") not in sys.path:
    sys.path.insert(0, str(PROJECT / "tools"))

from logitsmatch import paths  # noqa: E402
from logitsmatch.judge.compare import compare  # noqa: E402
from logitsmatch.judge.policy import Policy  # noqa: E402

DEFAULT_SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq"
CPU_REFERENCE = "golden_values_cpu_py3.11-torch2.13.0-mcore0.16.1.json"


# --- figures ------------------------------------------------------------------------------


def drift_figures(reference: dict, current: dict) -> dict:
    """What ``logitsmatch compare`` finds under Megatron's rule, as the summary's figures.

    Logprobs after a request's first divergent generated token score different
    tokens; compare() counts them as not comparable, so "max |Δlogprob|" is over
    the positions both runs share.
    """
    result = compare(reference, current, Policy())
    divergences = [index for index in result.first_divergences.values() if index is not None]
    return {
        "tokens_equal": result.tokens_agree,
        "first_divergence": min(divergences) if divergences else None,
        "max_abs_logprob": result.max_abs_delta,
        "mean_abs_logprob": result.mean_abs_delta,
        "p99_abs_logprob": result.p99_abs_delta,
        "compared_logprobs": result.n_compared,
        "over_megatron_tol": result.n_over_tolerance,
    }


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_summary(summary: dict) -> str:
    lines = [
        f"# GPU check: {summary['suite']}",
        "",
        f"- machine: {', '.join(summary['machine'].get('gpus') or ['no GPU'])}; python {summary['machine']['python']}, "
        f"torch {summary['machine'].get('torch')}, megatron-core {summary['machine'].get('megatron-core')}",
        f"- optional GPU packages: {', '.join(summary['machine'].get('gpu_packages') or []) or 'none'}; "
        f"TF32 matmul {summary['machine'].get('tf32_matmul')}",
        f"- toolchain {summary['toolchain']}; platform {summary['platform']}; TP {summary['tensor_parallel']}",
        f"- reference: `{summary['reference']}` (CPU, fp32, TP8, megatron-core 0.16.1)",
        f"- weights sha256 matches the reference's: {summary.get('weights_match')}",
        "",
        "| run | status | golden | wall s | tokens equal vs CPU fp32 | first divergence | max abs Δlogprob "
        "(shared) | over 1e-3 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in summary["runs"]:
        fig = run.get("vs_reference") or {}
        over = fig.get("over_megatron_tol")
        lines.append(
            f"| {run['label']} | {run['status']} | {run.get('golden_action', '—')} | {_fmt(run.get('wall_s'))} | "
            f"{_fmt(fig.get('tokens_equal'))} | {_fmt(fig.get('first_divergence'))} | "
            f"{_fmt(fig.get('max_abs_logprob'))} | {_fmt(over)} |"
        )
    for pair in summary.get("pairs", []):
        fig = pair["figures"]
        lines.append("")
        lines.append(
            f"- {pair['current']} vs {pair['reference']}: tokens equal {_fmt(fig['tokens_equal'])}, first divergence "
            f"{_fmt(fig['first_divergence'])}, max |Δlogprob| {_fmt(fig['max_abs_logprob'])}"
        )
    for run in summary["runs"]:
        if run.get("stand_ins") is not None:
            lines += ["", f"Stand-ins in {run['label']}: " + ("; ".join(run["stand_ins"]) or "none")]
        if run.get("not_applied"):
            lines += [f"Not applied in {run['label']}:"] + [
                f"  - {flag}: {why}" for flag, why in run["not_applied"].items()
            ]
    lines += ["", f"Total wall time {summary['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


# --- machine ------------------------------------------------------------------------------


def probe_machine() -> dict:
    import importlib.metadata

    from logitsmatch.run.platforms import cuda_devices, installed_gpu_packages

    info = {"python": sys.version.split()[0]}
    for name in ("torch", "megatron-core", "triton"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[name] = importlib.metadata.version(name)
    info["gpus"] = cuda_devices()
    info["gpu_packages"] = sorted(installed_gpu_packages()) if info["gpus"] else []
    with contextlib.suppress(Exception):
        import torch

        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        info["cuda"] = torch.version.cuda
    return info


# --- steps --------------------------------------------------------------------------------


def prepare_weights(suite, project: Path, timeout_s: float) -> str | None:
    """Write the synthetic checkpoint on the CPU (CUDA hidden from the writer); its weights sha256."""
    from logitsmatch.rank.checkpoint import read_checkpoint_args
    from logitsmatch.run.plan import choose_checkpoint, tokenizer_spec
    from logitsmatch.run.synthetic_weights import ensure_checkpoint

    tokenizer = tokenizer_spec(suite, project, False, None)
    choice = choose_checkpoint(suite, project, None, tokenizer, read_checkpoint_args)
    if choice.synthetic_spec is None:
        return None  # a user checkpoint (CHECKPOINT_LOAD_PATH): nothing to write
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        _, digest = ensure_checkpoint(choice.synthetic_spec, paths.cache_root(), timeout_s)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return digest


def logitsmatch(args: list[str], log_path: Path, timeout_s: float) -> tuple[int, float]:
    """Run the CLI as a user would; its output goes to the console and to ``log_path``."""
    started = time.monotonic()
    command = [sys.executable, "-m", "logitsmatch", *args]
    with open(log_path, "a") as log:
        log.write(f"$ logitsmatch {' '.join(args)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
            code = process.wait(timeout=max(timeout_s - (time.monotonic() - started), 1))
        except subprocess.TimeoutExpired:
            process.kill()
            code = 124
    return code, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--toolchain", required=True)
    parser.add_argument("--suite", default=DEFAULT_SUITE)
    parser.add_argument("--platform", default=None, help="default: detected (h100 on one H100)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--reference", default=CPU_REFERENCE, help="golden file name in golden_values/<suite>/")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--run-timeout", type=float, default=240.0, help="deadline of each run, seconds")
    parser.add_argument("--repeat-budget-s", type=float, default=240.0,
                        help="rerun the first dtype (determinism) only if the check has used less than this")
    args = parser.parse_args(argv)

    from logitsmatch.run.platforms import PLATFORMS, detect_platform_name
    from logitsmatch.suites import load_suite

    started = time.monotonic()
    project = paths.project_root()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    log = work / "logitsmatch.log"
    suite = load_suite(project, args.suite)
    machine = probe_machine()
    platform_name = args.platform or detect_platform_name(machine["gpus"])
    print(f"[gpu_check] machine: {json.dumps(machine)}")
    print(f"[gpu_check] platform {platform_name}, TP {args.tensor_parallel_size}, dtypes {args.dtypes}")

    reference_path = project / "golden_values" / suite.name / args.reference
    reference = json.loads(reference_path.read_text())
    reference_provenance = json.loads(paths.provenance_path(reference_path).read_text())
    summary = {
        "suite": suite.name,
        "toolchain": args.toolchain,
        "platform": platform_name,
        "tensor_parallel": args.tensor_parallel_size,
        "reference": f"golden_values/{suite.name}/{args.reference}",
        "machine": machine,
        "runs": [],
        "pairs": [],
    }
    keep: list[Path] = [log]
    failed = False
    try:
        t0 = time.monotonic()
        digest = prepare_weights(suite, project, args.run_timeout)
        summary["weights_prepare_s"] = time.monotonic() - t0
        summary["weights_sha256"] = digest
        summary["weights_match"] = digest == reference_provenance.get("weights", {}).get("sha256")
        print(f"[gpu_check] synthetic checkpoint ready in {summary['weights_prepare_s']:.1f} s; sha256 {digest}")

        results: dict[str, dict] = {}
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        for dtype in dtypes:
            base = PLATFORMS[platform_name].configured(tensor_parallel=args.tensor_parallel_size, dtype_override=dtype)
            label = base.label(suite.model_args)
            golden = paths.golden_path(suite.name, label, args.toolchain)
            result = paths.result_path(suite.name, label, args.toolchain)
            run = {"label": label, "dtype": dtype, "golden": str(golden.relative_to(project))}
            summary["runs"].append(run)
            common = [suite.name, "--toolchain", args.toolchain, "--platform", platform_name,
                      "--tensor-parallel-size", str(args.tensor_parallel_size), "--dtype", dtype,
                      "--timeout", str(args.run_timeout), "--keep-run-dir"]
            had_golden = golden.is_file()
            code, wall = logitsmatch(
                ["run", *common, *([] if had_golden else ["--no-compare"])], log, args.run_timeout + 60
            )
            run["wall_s"] = wall
            if code not in (0, 1) or not result.is_file():
                run["status"] = f"FAILED (exit {code})"
                failed = True
                continue
            provenance = json.loads(paths.provenance_path(result).read_text())
            run["stand_ins"] = provenance.get("stand_ins")
            run["not_applied"] = provenance.get("flags", {}).get("not_applied")
            run["timings_s"] = provenance.get("timings_s")
            if had_golden:
                run["golden_action"] = "judged: " + ("PASS" if code == 0 else "DRIFT")
                run["status"] = "ok" if code == 0 else "drift vs its own golden"
                failed |= code != 0
                keep += [result.with_name(name) for name in ("report.md", "report.json")]
            else:
                code, _ = logitsmatch(
                    ["record", suite.name, "--toolchain", args.toolchain, "--platform", label], log, 120
                )
                run["golden_action"] = "recorded" if code == 0 else f"record failed (exit {code})"
                run["status"] = "ok" if code == 0 else "record failed"
                failed |= code != 0
            keep += [golden, paths.provenance_path(golden), result, paths.provenance_path(result)]
            current = json.loads(result.read_text())
            run["vs_reference"] = drift_figures(reference, current)
            stem = f"gpu_check_{label}_vs_cpu-fp32"
            compare_code, _ = logitsmatch(
                ["compare", str(reference_path), str(result),
                 "--markdown", str(work / f"{stem}.md"), "--json", str(work / f"{stem}.json")], log, 120)
            run["compare_exit"] = compare_code
            keep += [work / f"{stem}.md", work / f"{stem}.json"]
            results[label] = current
        labels = list(results)
        for i, first in enumerate(labels):
            for second in labels[i + 1 :]:
                summary["pairs"].append(
                    {"reference": second, "current": first, "figures": drift_figures(results[second], results[first])}
                )
        # Determinism: the first dtype again, bit-exact against the result just recorded.
        if labels and time.monotonic() - started < args.repeat_budget_s:
            dtype = dtypes[0]
            label = labels[0]
            golden = paths.golden_path(suite.name, label, args.toolchain)
            if golden.is_file():
                code, wall = logitsmatch(
                    ["run", suite.name, "--toolchain", args.toolchain, "--platform", platform_name,
                     "--tensor-parallel-size", str(args.tensor_parallel_size), "--dtype", dtype,
                     "--timeout", str(args.run_timeout), "--no-compare"], log, args.run_timeout + 60)
                again = paths.result_path(suite.name, label, args.toolchain)
                repeat = {"label": f"{label} (repeat)", "dtype": dtype, "wall_s": wall,
                          "status": "ok" if code == 0 else f"FAILED (exit {code})"}
                if code == 0:
                    figures = drift_figures(json.loads(golden.read_text()), json.loads(again.read_text()))
                    repeat["vs_reference"] = drift_figures(reference, json.loads(again.read_text()))
                    repeat["golden_action"] = "bit-exact vs first run: " + str(
                        figures["tokens_equal"] and figures["max_abs_logprob"] == 0.0
                    )
                    summary["determinism"] = figures
                summary["runs"].append(repeat)
    except Exception as exc:  # noqa: BLE001 - the summary and bundle must still be written
        summary["error"] = f"{type(exc).__name__}: {exc}"
        failed = True
        print(f"[gpu_check] error: {summary['error']}")
    finally:
        summary["wall_s"] = time.monotonic() - started
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (out / "summary.md").write_text(render_summary(summary))
        write_bundle(out / "bundle.tar.gz", project, keep, out)
        print(render_summary(summary))
    return 1 if failed else 0


def write_bundle(target: Path, project: Path, files: list[Path], out: Path) -> None:
    """Goldens, provenance, results, reports and the rank logs of every kept run dir."""
    results = paths.results_root()
    with tarfile.open(target, "w:gz") as bundle:
        for path in files:
            if path.is_file():
                bundle.add(path, arcname=_arcname(path, project, results, out))
        for run_log in sorted(results.glob("*/*/*/.runs/*/logs/**/*.log")) + sorted(
            results.glob("*/*/*/.runs/*/launcher.log")
        ):
            if run_log.stat().st_size < 4 << 20:
                bundle.add(run_log, arcname=_arcname(run_log, project, results, out))
        for name in ("summary.json", "summary.md"):
            bundle.add(out / name, arcname=name)


def _arcname(path: Path, project: Path, results: Path, out: Path) -> str:
    for root, prefix in ((out, ""), (results, "results/"), (project, "")):
        with contextlib.suppress(ValueError):
            return prefix + str(path.resolve().relative_to(root.resolve()))
    return path.name


if __name__ == "__main__":
    sys.exit(main())
