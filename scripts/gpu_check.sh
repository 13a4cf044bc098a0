#!/usr/bin/env bash
# GPU check (issue 6, docs/gpu.md): the harness's GPU path on one GPU, TP1, synthetic 583M
# weights, bf16 and fp32; records GPU goldens (if missing) and compares them with the CPU
# fp32 golden. Needs no network: wheels missing from the machine travel in .whl/.
#
#   bash scripts/gpu_check.sh                       # from the repository root
#
# Environment:
#   PYTHON        interpreter with a CUDA build of torch (default: python3)
#   TOOLCHAIN     toolchain name in pyproject.toml matching that interpreter
#                 (default: py3.12-torch2.11.0-mcore0.19.2)
#   OUT           where summary.md, summary.json, bundle.tar.gz and gpu_check.log go
#                 (default: ./gpu_check_out)
#   GPU_CHECK_ARGS  extra arguments for python scripts/gpu_check.py
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
PYTHON=${PYTHON:-python3}
TOOLCHAIN=${TOOLCHAIN:-py3.12-torch2.11.0-mcore0.19.2}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
START=$(date +%s)
phase() { echo "[gpu_check.sh +$(( $(date +%s) - START ))s] $*"; }

export PYTHONUNBUFFERED=1
# Results and the checkpoint cache stay out of the tree (and off a small home directory).
export LOGITSMATCH_RESULTS=${LOGITSMATCH_RESULTS:-${TMPDIR:-/tmp}/logitsmatch-gpu-check/results}
export LOGITSMATCH_CACHE=${LOGITSMATCH_CACHE:-${TMPDIR:-/tmp}/logitsmatch-gpu-check/cache}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/logitsmatch-gpu-check/inductor}

phase "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" --version

if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=${LOGITSMATCH_SITE:-${TMPDIR:-/tmp}/logitsmatch-gpu-check/site}
    phase "installing carried wheels into $SITE: $(cd .whl && ls *.whl | tr '\n' ' ')"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"

phase "imports"
"$PYTHON" - <<'EOF'
import importlib.metadata as md
import torch, zmq, deepdiff, megatron.core  # noqa: F401
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(),
      "megatron-core", md.version("megatron-core"), "pyzmq", md.version("pyzmq"))
EOF

phase "check"
status=0
"$PYTHON" scripts/gpu_check.py --toolchain "$TOOLCHAIN" --out "$OUT" ${GPU_CHECK_ARGS:-} || status=$?
# What comes back from a lent machine is limited to a few files: keep summary, log, bundle.
rm -rf "$OUT/work"
phase "done (exit $status)"
exit $status
