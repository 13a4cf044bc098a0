"""Megatron-LM's own inference comparator, run as the reference for parity tests.

``tests/data/megatron/test_inference_regular_pipeline.py`` is a byte copy of
Megatron-LM's file (commit and license in that folder's README). Its
``test_inference_pipeline(golden_values_path, test_values_path, model_config_path)``
reads three files and raises on any mismatch; any exception it raises is
Megatron's "fail", as it is a failed test in Megatron's CI.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import yaml

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "megatron" / "test_inference_regular_pipeline.py"


def _load():
    spec = importlib.util.spec_from_file_location("megatron_test_inference_regular_pipeline", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.logger.setLevel(logging.ERROR)  # its subset warning would flood the test log
    return module


_REFERENCE_MODULE = _load()


def megatron_verdict(golden, current, metrics: list[str], workdir: Path) -> bool:
    """True when Megatron's comparator passes ``current`` against ``golden`` with these METRICS.

    ``golden`` / ``current`` are documents (written as JSON, NaN as its token) or paths.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in (("golden.json", golden), ("current.json", current)):
        if isinstance(doc, (str, os.PathLike)):
            paths.append(str(doc))
            continue
        path = workdir / name
        path.write_text(json.dumps(doc))
        paths.append(str(path))
    config = workdir / "model_config.yaml"
    config.write_text(yaml.safe_dump({"MODE": "inference", "METRICS": list(metrics)}))
    if os.environ.get("ENABLE_LIGHTWEIGHT_MODE") == "true":
        raise RuntimeError("ENABLE_LIGHTWEIGHT_MODE=true makes Megatron's comparator skip: unset it for parity tests")
    try:
        _REFERENCE_MODULE.test_inference_pipeline(paths[0], paths[1], str(config))
    except Exception:  # noqa: BLE001 - any exception is a failed test in Megatron's CI
        return False
    return True
