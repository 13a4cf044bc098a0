"""Suites: one folder per case, in Megatron's own format plus a logitsmatch sidecar.

``suites/<case>/model_config.yaml`` is exactly what Megatron-LM's functional
tests use (ENV_VARS, TEST_TYPE, MODE, MODEL_ARGS, METRICS). What only
logitsmatch needs — the synthetic checkpoint to use when no
CHECKPOINT_LOAD_PATH is given, the shipped tokenizer, the deadline and the
comparison policy — lives beside it in ``logitsmatch.yaml``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.model_args import check_known

MEGATRON_KEYS = {"ENV_VARS", "TEST_TYPE", "MODE", "MODEL_ARGS", "METRICS", "LAUNCHER"}
SIDECAR_KEYS = {"synthetic_checkpoint", "tokenizer_model", "timeout_s", "comparison", "description"}
DEFAULT_TIMEOUT_S = 600
_VARIABLE = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Suite:
    name: str
    folder: Path
    env_vars: dict[str, str]
    model_args: dict
    metrics: list[str]
    synthetic_model: str
    synthetic_seed: int
    tokenizer_model: str
    timeout_s: float
    comparison: dict | None

    def config_digest(self) -> str:
        """sha256 of the suite's two files, recorded in provenance."""
        digest = hashlib.sha256()
        for name in ("model_config.yaml", "logitsmatch.yaml"):
            digest.update((self.folder / name).read_bytes())
        return digest.hexdigest()

    def arg(self, flag: str, default=None):
        """A MODEL_ARGS value with ${VAR} expanded from the environment (None if a variable is unset)."""
        value = self.model_args.get(flag, default)
        if not isinstance(value, str):
            return value
        names = _VARIABLE.findall(value)
        if any(name not in os.environ for name in names):
            return None
        return _VARIABLE.sub(lambda match: os.environ[match.group(1)], value)

    @property
    def prompts(self) -> list[str]:
        prompts = self.model_args.get("--prompts")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not prompts or not all(isinstance(prompt, str) and prompt for prompt in prompts):
            raise BadInput(f"{self.folder}/model_config.yaml: --prompts must be a non-empty string or list of strings")
        return prompts


def _read_yaml(path: Path) -> dict:
    import yaml  # imported here so nox's own interpreter can list suites without PyYAML

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping at the top level")
    return data


def suites_root(project: Path) -> Path:
    return project / "suites"


def suite_names(project: Path) -> list[str]:
    root = suites_root(project)
    return sorted(path.parent.name for path in root.glob("*/model_config.yaml"))


def load_suite(project: Path, name: str) -> Suite:
    folder = suites_root(project) / name
    if not (folder / "model_config.yaml").is_file():
        raise BadInput(f"unknown suite {name!r} (known: {', '.join(suite_names(project)) or 'none'})")
    config = _read_yaml(folder / "model_config.yaml")
    sidecar = _read_yaml(folder / "logitsmatch.yaml")
    source = f"{folder}/model_config.yaml"

    unknown = set(config) - MEGATRON_KEYS
    if unknown:
        raise BadInput(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    unknown = set(sidecar) - SIDECAR_KEYS
    if unknown:
        raise BadInput(f"{folder}/logitsmatch.yaml: unknown key {sorted(unknown)[0]!r}")
    if config.get("MODE") != "inference":
        raise BadInput(f"{source}: MODE must be 'inference', got {config.get('MODE')!r}")

    model_args = config.get("MODEL_ARGS")
    env_vars = config.get("ENV_VARS") or {}
    metrics = config.get("METRICS")
    if not isinstance(model_args, dict) or not model_args:
        raise BadInput(f"{source}: MODEL_ARGS must be a non-empty mapping")
    if not isinstance(env_vars, dict) or not all(isinstance(v, (str, int, float, bool)) for v in env_vars.values()):
        raise BadInput(f"{source}: ENV_VARS must map names to scalar values")
    if not isinstance(metrics, list) or not all(isinstance(metric, str) for metric in metrics):
        raise BadInput(f"{source}: METRICS must be a list of metric names")
    check_known(model_args, source)

    synthetic = sidecar.get("synthetic_checkpoint") or {}
    if not isinstance(synthetic, dict) or not isinstance(synthetic.get("model"), str):
        raise BadInput(f"{folder}/logitsmatch.yaml: synthetic_checkpoint.model must name a file in model_configs/")
    timeout = sidecar.get("timeout_s", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadInput(f"{folder}/logitsmatch.yaml: timeout_s must be a positive number")
    comparison = sidecar.get("comparison")
    if comparison is not None and not isinstance(comparison, dict):
        raise BadInput(f"{folder}/logitsmatch.yaml: comparison must be a mapping")
    return Suite(
        name=name,
        folder=folder,
        env_vars={key: str(value) for key, value in env_vars.items()},
        model_args=model_args,
        metrics=metrics,
        synthetic_model=synthetic["model"],
        synthetic_seed=int(synthetic.get("seed", 1234)),
        tokenizer_model=str(sidecar.get("tokenizer_model", "")),
        timeout_s=float(timeout),
        comparison=comparison,
    )


def load_architecture(project: Path, model: str) -> dict:
    """model_configs/<model>.yaml"""
    return _read_yaml(project / "model_configs" / f"{model}.yaml")
