"""What the tests (and the fault/fuzz campaigns in benchmarks/) share: the project's names and the CLI runner.

The default toolchain and the suite names come from the project's own files,
never from literals, so a new default toolchain needs no test edit.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

from logitsmatch.suites import suite_names
from logitsmatch.toolchains import default_toolchain_name, load_toolchains, routing_toolchain, toolchain_venv

PROJECT = Path(__file__).resolve().parents[2]
PYPROJECT = PROJECT / "pyproject.toml"
MEGATRON_CASES = PROJECT.parent / "shared" / "megatron_cases"
MEGATRON_INFERENCE_CASES = PROJECT.parent / "shared" / "megatron_inference_cases"  # all 60, for the family table
MEGATRON_CASES_ENV = "LOGITSMATCH_MEGATRON_CASES"  # names another folder of Megatron's case folders
MOE_EP8_CASE = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq"
DEFAULT_TOOLCHAIN = default_toolchain_name(PYPROJECT)
ROUTING_TOOLCHAIN = routing_toolchain(PYPROJECT)  # the newest CPU toolchain that records MoE routing
TINY_SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
SEED_SUITE = "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq"
VOCAB = PROJECT / "model_configs" / "tokenizer" / "logitsmatch-bpe-2048.vocab.json"
assert {TINY_SUITE, SEED_SUITE} <= set(suite_names(PROJECT)), "the tests' suites are missing from suites/"


def megatron_cases_folder() -> Path:
    """Where Megatron-LM's case folders are: $LOGITSMATCH_MEGATRON_CASES, else ../shared/megatron_cases."""
    return Path(os.environ.get(MEGATRON_CASES_ENV) or MEGATRON_CASES)


def megatron_case_dirs(folder: Path) -> list[Path]:
    """The case folders (each with a model_config.yaml) in ``folder``."""
    return sorted(p for p in folder.iterdir() if (p / "model_config.yaml").is_file())


def main_job_zmq_cases(suites: list[str]) -> list[str]:
    """The main job's five ZMQ cases and their tiny siblings (the family's offline and CUDA-graph ZMQ cases are
    judged across releases elsewhere: tests/judge/test_megatron_parity.py)."""
    cases = [name for name in suites if name.startswith("gpt_dynamic_inference_") and name.endswith("_logitsmatch_zmq")]
    assert len(cases) == 10, cases
    return cases


def cpu_goldens(suite: str) -> dict[str, dict]:
    """Every CPU golden of ``suite`` (not the provenance sidecars), by file name."""
    folder = PROJECT / "golden_values" / suite
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("golden_values_cpu_*.json"))
            if not path.name.endswith(".provenance.json")}


def golden_file(suite: str, toolchain: str = DEFAULT_TOOLCHAIN, platform: str = "cpu") -> Path:
    return PROJECT / "golden_values" / suite / f"golden_values_{platform}_{toolchain}.json"


def run_logitsmatch(
    *args: str, env: dict | None = None, timeout: float = 900, cwd: Path = PROJECT
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "logitsmatch", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line(completed: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    """Bad input: exit ``code``, exactly one stderr line containing ``fragment``, no traceback."""
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == code, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert len(lines) == 1, completed.stderr
    assert fragment in lines[0], lines[0]


def installed_toolchain() -> str | None:
    """The pyproject toolchain this interpreter's python, torch and megatron-core match."""
    try:
        versions = {name: importlib.metadata.version(name).split("+")[0] for name in ("torch", "megatron-core")}
    except importlib.metadata.PackageNotFoundError:
        return None
    python = "{}.{}".format(*sys.version_info[:2])
    for name, toolchain in load_toolchains(PYPROJECT).items():
        if (toolchain.python, toolchain.torch, toolchain.megatron_core) == (
            python,
            versions["torch"],
            versions["megatron-core"],
        ):
            return name
    return None


def goldens_digest() -> dict[str, str]:
    """sha256 of every golden file (and provenance sidecar) under golden_values/, by path."""
    root = PROJECT / "golden_values"
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*.json"))}


def goldens_changed(before: dict[str, str]) -> list[str]:
    after = goldens_digest()
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def toolchain_missing() -> str | None:
    """Why torch / megatron-core cannot be imported here, or None when both can."""
    for module in ("torch", "megatron.core"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not importable in this venv ({exc}); run the tests with `nox -s tests`"
    return None


def require_toolchain_module(name: str):
    """Import ``name`` for a test module that needs the toolchain: skipped without it, except under CI,
    where a missing toolchain is a failure (inference coverage must never silently disappear)."""
    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(
                f"CI is set and {name} is not importable ({exc}): the inference tests would vanish"
            ) from exc
        pytest.skip(f"{name} is not importable ({exc})", allow_module_level=True)


def require_toolchain_venv(toolchain: str) -> Path:
    """The python of ``toolchain``'s venv (.nox/toolchains/<toolchain>); a test without it is skipped, except under
    CI (fails). ``nox -s tests`` builds the routing toolchain's; any toolchain's:
    nox -s "logitsmatch(<toolchain>)" --install-only."""
    import pytest

    python = toolchain_venv(PROJECT, toolchain) / "bin" / "python"
    if python.is_file():
        return python
    message = (f"no venv for toolchain {toolchain} ({python}): "
               f"nox -s 'logitsmatch({toolchain})' --install-only builds it")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set: {message}", pytrace=False)
    pytest.skip(message)


class FakeSession:
    """What the nox sessions (devtools.nox_support) use of a nox session, recording instead of running:
    ``outcomes`` maps a suite (a command's third word) to the exit code its command fails with."""

    name = "fake"
    python = None

    def __init__(self, posargs=(), outcomes=None):
        self.posargs, self.outcomes, self.logs, self.runs = list(posargs), outcomes or {}, [], []

    def log(self, message):
        self.logs.append(message)

    warn = log

    def error(self, message):
        raise RuntimeError(message)

    def skip(self, message):
        raise RuntimeError(f"skipped: {message}")

    def run(self, *args, **kwargs):
        from nox.command import CommandFailed

        self.runs.append(args)
        code = self.outcomes.get(args[2] if len(args) > 2 else None, 0)
        if code:
            raise CommandFailed(f"Returned code {code}", return_code=code)
