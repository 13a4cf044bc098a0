"""Synthetic weights are a pure function of (seed, name, shape), computed by numpy."""

from __future__ import annotations

import numpy as np

from logitsmatch.run.synthetic_weights import parameter_values, weights_digest


def test_values_depend_only_on_seed_name_and_shape():
    a = parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000)
    b = parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, parameter_values("decoder.layers.1.mlp.linear_fc1.weight", (64, 32), 1234, 2, 1000))
    assert not np.array_equal(a, parameter_values("decoder.layers.0.mlp.linear_fc1.weight", (64, 32), 99, 2, 1000))


def test_value_rules():
    norm = parameter_values("decoder.final_layernorm.weight", (4096,), 1, 2, 1000)
    assert abs(norm.mean() - 1.0) < 0.01
    proj = parameter_values("decoder.layers.0.self_attention.linear_proj.weight", (256, 256), 1, 8, 1000)
    assert abs(proj.std() - 0.02 / 4) < 1e-3
    output = parameter_values("output_layer.weight", (2048, 64), 1, 2, 1000)
    assert output[:1000].std() < 0.2 * output[1000:].std()


def test_stream_is_stable():
    """Pins numpy's PCG64 stream: if this changes, every synthetic golden changes with it."""
    values = parameter_values("embedding.word_embeddings.weight", (4, 3), 1234, 2, 0)
    digest = weights_digest([("embedding.word_embeddings.weight", values)])
    assert digest == "6b377ffe95917c0e91fec59f02f03e26d8b0a1272b05abb05587d3aa9f1925f5"


RULES = (
    "embedding.word_embeddings.weight",
    "decoder.layers.0.self_attention.linear_qkv.weight",
    "decoder.layers.0.self_attention.linear_proj.weight",
    "decoder.layers.1.mlp.linear_fc2.weight",
    "decoder.layers.0.input_layernorm.weight",
    "decoder.layers.0.input_layernorm.bias",
    "decoder.final_layernorm.weight",
    "output_layer.weight",
)
DIGESTS = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
import numpy
from logitsmatch.run.synthetic_weights import parameter_values
rules = json.loads(sys.argv[2])
print(json.dumps({"numpy": numpy.__version__, "digests": {
    name: hashlib.sha256(parameter_values(name, (64, 48), 1234, 24, 8).tobytes()).hexdigest() for name in rules}}))
"""


def test_value_rules_are_the_same_under_numpy_1_and_2(tmp_path):
    """The toolchains pin numpy 1.26 (megatron-core 0.15) or 2.x: every rule must give the same bytes
    under both, or the two toolchains load different weights (as they once did, by 1 ulp)."""
    import json
    import subprocess
    import sys

    from support import PROJECT

    venv = tmp_path / "numpy1"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "numpy==1.26.4"],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    runs = {}
    for python in (sys.executable, str(venv / "bin" / "python")):
        done = subprocess.run([python, "-c", DIGESTS, str(PROJECT / "tools"), json.dumps(RULES)],
                              capture_output=True, text=True, check=True)
        runs[python] = json.loads(done.stdout)
    (numpy_2, numpy_1) = runs.values()
    assert numpy_1["numpy"].startswith("1.") and numpy_2["numpy"].startswith("2."), runs
    assert numpy_1["digests"] == numpy_2["digests"]
