"""megatron-core's Mamba hybrid as rank.hybrid_builder builds it, its kernels from rank.cpu_mamba: the inference
path (prefill, then one token at a time from the conv and SSM states) gives the logits of a whole-sequence forward
through the training path, at every position. The dynamic engine's path runs in the family's hybrid suites."""

from __future__ import annotations

import json
import subprocess
import sys

from support import PROJECT

CHECK = PROJECT / "tests" / "support" / "hybrid_decode_check.py"


def test_prefill_then_decode_equals_the_whole_sequence_forward():
    run = subprocess.run([sys.executable, "-W", "ignore", str(CHECK)], capture_output=True, text=True, timeout=300,
                         env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["mixer_module"] == "megatron.core.ssm.mamba_mixer" and found["kernels_from_cpu_mamba"]
    assert found["logits_max"] > 0.1  # the comparison is not between zeros
    assert found["prefill_last"] < 1e-5 and len(found["decoded"]) == 7 and max(found["decoded"]) < 1e-5, found
