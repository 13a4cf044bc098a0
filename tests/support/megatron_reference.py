"""Megatron-LM's own inference comparator as the parity reference: run from a checkout, or as recorded.

The comparator is ``test_inference_pipeline(golden_values_path, test_values_path, model_config_path)``
in Megatron-LM's COMPARATOR file: it reads three files and raises on any mismatch; any exception
is Megatron's "fail", as it is a failed test in Megatron's CI. Nothing of it is kept in this
project: with a checkout (MEGATRON_LM_DIR) it is imported from there by path; without one, the
verdicts it gave, recorded by tests/support/record_megatron_verdicts.py, are in RECORDED.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

from support.parity_cases import ParityCase

CHECKOUT_ENV = "MEGATRON_LM_DIR"
COMPARATOR = Path("tests/functional_tests/python_test_utils/test_inference_regular_pipeline.py")
RECORDED = Path(__file__).resolve().parents[1] / "data" / "megatron_verdicts.json"
RECORDER = Path(__file__).resolve().parent / "record_megatron_verdicts.py"
# Megatron's comparator walks the golden's request ids as a set: with several failing requests, the
# one it names first depends on string hashing. Verdicts are taken with this hash seed.
HASH_SEED = "0"


def checkout_from_env() -> Path | None:
    """The Megatron-LM checkout MEGATRON_LM_DIR names, or None when it names none."""
    value = os.environ.get(CHECKOUT_ENV)
    return Path(value) if value else None


def comparator_file(checkout: Path) -> Path:
    path = Path(checkout) / COMPARATOR
    if not path.is_file():
        raise FileNotFoundError(f"{checkout} is not a Megatron-LM checkout: it has no {COMPARATOR}")
    return path


def load_comparator(checkout: Path):
    """Megatron's comparator module, imported by path from ``checkout`` (nothing else of Megatron-LM is imported)."""
    spec = importlib.util.spec_from_file_location("megatron_test_inference_regular_pipeline", comparator_file(checkout))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.logger.setLevel(logging.ERROR)  # its subset warning would flood the output
    return module


def judge(comparator, case: ParityCase, workdir: Path) -> dict:
    """Megatron's verdict on ``case``: {"verdict": "pass"|"fail", "first_line": first line of its exception or ""}."""
    if os.environ.get("ENABLE_LIGHTWEIGHT_MODE") == "true":
        raise RuntimeError("ENABLE_LIGHTWEIGHT_MODE=true makes Megatron's comparator skip: unset it")
    workdir.mkdir(parents=True, exist_ok=True)
    paths = [workdir / name for name in ("golden.json", "current.json", "model_config.yaml")]
    for path, content in zip(paths, case.files()):
        path.write_bytes(content)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "No metrics defined ..., skipping validation."
            comparator.test_inference_pipeline(*map(str, paths))
    except Exception as exc:  # noqa: BLE001 - any exception is a failed test in Megatron's CI
        return {"verdict": "fail", "first_line": traceback.format_exception_only(exc)[0].splitlines()[0]}
    return {"verdict": "pass", "first_line": ""}


def git_head(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_recorded(path: Path = RECORDED) -> dict:
    return json.loads(path.read_text())


def checkout_verdicts(checkout: Path, case_dirs_folder: Path | None, output: Path) -> dict:
    """Run Megatron's comparator from ``checkout`` on every case, in a child with the fixed hash seed
    (the recorder, writing to ``output``); the verdicts it wrote, in RECORDED's format."""
    command = [sys.executable, str(RECORDER), "--megatron-lm", str(checkout), "--output", str(output)]
    command += ["--megatron-cases", str(case_dirs_folder)] if case_dirs_folder else ["--no-megatron-cases"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": HASH_SEED})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return load_recorded(output)
