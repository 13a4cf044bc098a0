"""Deterministic synthetic weights, written once as a Megatron torch_dist checkpoint.

Values come from numpy's seeded PCG64 generator, one stream per parameter
name, so they do not depend on the torch or megatron-core version that writes
them. The checkpoint is saved at TP1 with megatron-core's ``dist_checkpointing``
and read back at any TP by the same loader a user checkpoint takes.

Generated checkpoints are cached under ``<cache>/checkpoints/<key>/``, keyed
by the spec's content, the writing megatron-core release and numpy's version; the writer runs
as ``python -m logitsmatch.rank.weights_writer SPEC.json OUT_DIR`` (one gloo
process on loopback) into a private folder that is renamed into place, so
concurrent runs never see a half-written checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 3  # bump when the value rules below change (3: every rule names its precision)
# Output rows of the tokenizer's special ids are damped so that greedy decoding
# of a random model produces ordinary text tokens (and never an early eod).
SPECIAL_ROW_SCALE = 0.1
# MoE router weights: wide enough that a token's top-k experts are separated by margins far above
# TP/EP reduction-order noise (one flipped expert changes every later logit). Added to v3 without a
# bump: no model before it had a router, so every v3 checkpoint keeps its values and digest.
ROUTER_STD = 0.2


def parameter_values(name: str, shape: tuple[int, ...], seed: int, num_layers: int, num_special: int) -> np.ndarray:
    """The float32 value of one parameter: a function of (seed, name, shape) only.

    Every operation names its precision. numpy 1.x (value-based casting) and 2.x (NEP 50)
    promote a numpy float64 scalar times a float32 array differently, so the scaled
    projections once differed by 1 ulp between the 0.15 toolchain (numpy 1.26) and the
    others (numpy 2.x): that was the whole 0.15.3 <-> 0.16.1 drift (docs/explain/). The rules
    below keep numpy 2.x's values; tests/run/test_synthetic_weights.py checks both numpy releases.
    """
    stream = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(name.encode())])))
    noise = stream.standard_normal(size=shape, dtype=np.float32)
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name and leaf in ("weight", "layer_norm_weight"):
        return np.float32(1.0) + np.float32(0.05) * noise
    if leaf in ("bias", "layer_norm_bias"):
        return np.float32(0.02) * noise
    if name.endswith("router.weight"):
        values = np.float32(ROUTER_STD) * noise
    elif name.endswith(("linear_proj.weight", "linear_fc2.weight")):
        std = np.float64(0.02) / np.sqrt(np.float64(2.0 * num_layers))
        values = (std * noise.astype(np.float64)).astype(np.float32)
    else:
        values = np.float32(0.02) * noise
    if name == "output_layer.weight":
        values[:num_special] *= np.float32(SPECIAL_ROW_SCALE)
    return values


def weights_digest(named_arrays: list[tuple[str, np.ndarray]]) -> str:
    """sha256 over names, shapes and float32 bytes, in name order."""
    digest = hashlib.sha256()
    for name, array in sorted(named_arrays, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def cache_key(spec: dict, writer: str | None = None, numpy_versions: list[str] | None = None) -> str:
    """Content key: the spec, the value rules, the writer's megatron-core release and the numpy that
    draws the values (default: this venv's). numpy does not promise the same Generator streams across
    releases: a checkpoint drawn by another numpy is never reused, and the loaded-weights digest shows
    whether it differs."""
    numpy_versions = numpy_versions or [importlib.metadata.version("numpy"), np.__version__]
    keyed = {
        **spec,
        "generator_version": GENERATOR_VERSION,
        "writer": writer or importlib.metadata.version("megatron-core"),
        "numpy": numpy_versions,
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]


def ensure_checkpoint(spec: dict, cache_root: Path, timeout_s: float) -> tuple[Path, str]:
    """The cached checkpoint for ``spec`` (written now if missing) and its weights digest."""
    from logitsmatch.errors import RunFailed

    target = cache_root / "checkpoints" / cache_key(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "logitsmatch_synthetic.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
            try:
                (staging / "spec.json").write_text(json.dumps(spec))
                completed = subprocess.run(
                    [sys.executable, "-m", "logitsmatch.rank.weights_writer", str(staging / "spec.json"),
                     str(staging / "ckpt")],
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                    start_new_session=True,
                    env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # written on CPU everywhere
                )
                if completed.returncode != 0:
                    tail = "\n".join(completed.stderr.strip().splitlines()[-10:])
                    raise RunFailed(f"writing the synthetic checkpoint failed (phase 'weights'):\n{tail}")
                os.replace(staging / "ckpt", target)
            except subprocess.TimeoutExpired:
                raise RunFailed(
                    f"writing the synthetic checkpoint took over {timeout_s:.0f} s (phase 'weights')"
                ) from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    written = json.loads((target / "logitsmatch_synthetic.json").read_text())
    return target, written["weights_sha256"]
