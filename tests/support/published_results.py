"""Results published as `logitsmatch run --layout L` publishes them, for the tests of invariance over layouts
and schedules (tests/cli/test_invariance.py, tests/run/test_schedules.py)."""

from __future__ import annotations

import copy
import json

from logitsmatch.layouts import parse
from logitsmatch.run.plan import expected_weights
from logitsmatch.run.platforms import get_platform
from logitsmatch.toolchains import load_toolchains
from support import DEFAULT_TOOLCHAIN


def publish(project, root, suite, layout: str, document: dict, toolchain=DEFAULT_TOOLCHAIN):
    """A result of `suite` at `layout`, with the provenance a fresh run of the toolchain has."""
    chain = load_toolchains(project / "pyproject.toml")[toolchain]
    label = get_platform("cpu", layout=parse(layout)).label(suite.model_args, suite.world_size)
    folder = root / suite.name / label / toolchain
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(document))
    (folder / "result.provenance.json").write_text(json.dumps({
        "toolchain": toolchain, "python": chain.python + ".0", "suite_config_sha256": suite.config_digest(),
        "packages": {"torch": chain.torch, "megatron-core": chain.megatron_core},
        "weights": expected_weights(suite, project), "timings_s": {"launch_wall": 12.5},
        "memory": {"peak_rss_mib_per_rank": [400.0] * parse(layout).world_size},
        "network": {"served_by_dp_rank": {"0": 0}}, "hardware": {"cpu": "test CPU"},
    }))
    return folder / "result.json"


def shifted(document: dict, delta: float, index: int = 3) -> dict:
    out = copy.deepcopy(document)
    out["1"]["logprobs"][index] += delta
    return out
