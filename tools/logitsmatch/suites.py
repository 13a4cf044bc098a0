"""Suites: one folder per case, in Megatron's own format plus a logitsmatch sidecar.

``suites/<case>/model_config.yaml`` is exactly what Megatron-LM's functional
tests use (ENV_VARS, TEST_TYPE, MODE, MODEL_ARGS, METRICS). What only
logitsmatch needs — the synthetic checkpoint to use when no
CHECKPOINT_LOAD_PATH is given, the shipped tokenizer, the deadline and the
comparison policy — lives beside it in ``logitsmatch.yaml``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.files import read_text_input
from logitsmatch.layouts import DEFAULT_WORLD_SIZE
from logitsmatch.model_args import NO_EFFECT_FLAGS, check_known, check_values
from logitsmatch.paths import check_name
from logitsmatch.policy import Policy

MEGATRON_KEYS = {"ENV_VARS", "TEST_TYPE", "MODE", "MODEL_ARGS", "METRICS", "LAUNCHER"}
SIDECAR_KEYS = {"synthetic_checkpoint", "tokenizer_model", "timeout_s", "comparison", "description", "world_size",
                "prompt_file", "driver"}
# The sidecar's ``driver``: the Megatron-LM script that runs the case, where its MODEL_ARGS do not say (Megatron's
# recipe names the script outside model_config.yaml). Absent: the flags decide (run.plan.offline_driver).
OFFLINE_INFERENCE = "offline_inference"  # examples/inference/offline_inference.py: megatron-core's MegatronLLM
DRIVERS = (OFFLINE_INFERENCE,)
SYNTHETIC_KEYS = {"model", "seed", "scaled_down"}
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
    policy: Policy  # what counts as a match: METRICS and the sidecar's comparison block, checked at load
    world_size: int = DEFAULT_WORLD_SIZE
    scaled_down: str | None = None  # why the synthetic model is smaller than the case's shape flags
    prompt_file_standin: str | None = None  # the sidecar's prompt_file: a project file standing in for a data set
    driver: str | None = None  # the sidecar's driver: one of DRIVERS, or None where MODEL_ARGS' flags decide

    def config_digest(self) -> str:
        """sha256 of the suite's two files (and of the prompt file its --prompt-file reads), recorded in provenance."""
        digest = hashlib.sha256()
        for name in ("model_config.yaml", "logitsmatch.yaml"):
            digest.update((self.folder / name).read_bytes())
        if PROMPT_FILE in self.model_args:
            digest.update(self.prompt_file().read_bytes())
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
        """--prompts, or the "text" of each line of --prompt-file (the first --prompt-file-num-truncate)."""
        source = f"{self.folder}/model_config.yaml"
        if PROMPT_FILE in self.model_args:
            if "--prompts" in self.model_args:
                raise BadInput(f"{source}: --prompts and {PROMPT_FILE} exclude each other (as in Megatron's driver)")
            truncate = self.model_args.get(f"{PROMPT_FILE}-num-truncate")
            return read_prompt_file(self.prompt_file(), None if truncate is None else int(truncate))
        prompts = self.model_args.get("--prompts")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not prompts or not all(isinstance(prompt, str) and prompt for prompt in prompts):
            raise BadInput(f"{source}: --prompts must be a non-empty string or list of strings")
        return prompts

    def prompt_file(self) -> Path:
        """The file --prompt-file reads here.

        A path into Megatron-LM's test-case folders names a file the case ships beside its model_config.yaml:
        here it lies beside the suite's, unchanged. A path under a variable (``${DATA_PATH}``) names a data set:
        read where the variable says when it is set, else the sidecar's ``prompt_file`` stand-in, if it has one.
        """
        value = str(self.model_args[PROMPT_FILE])
        if value.startswith(MEGATRON_CASE_FILES):
            return self.folder / Path(value).name
        if _VARIABLE.search(value):
            expanded = self.arg(PROMPT_FILE)
            if expanded is not None:
                return Path(expanded)
            if self.prompt_file_standin is not None:
                return self.folder.parents[1] / self.prompt_file_standin
            raise BadInput(f"suite {self.name}: {PROMPT_FILE} {value} needs {', '.join(_VARIABLE.findall(value))} "
                           f"set, or a prompt_file stand-in in its logitsmatch.yaml")
        raise BadInput(f"suite {self.name}: {PROMPT_FILE} {value} is neither a file of Megatron-LM's test cases "
                       f"({MEGATRON_CASE_FILES}...) nor under a variable such as ${{DATA_PATH}}")


PROMPT_FILE = "--prompt-file"
MEGATRON_CASE_FILES = "./tests/functional_tests/test_cases/"  # where a case's own files lie in Megatron-LM


def read_prompt_file(path: Path, truncate: int | None) -> list[str]:
    """Each line's "text" (JSON lines, other fields ignored), the first ``truncate`` only: Megatron-LM's
    examples/inference/utils.py get_requests_from_file."""
    prompts = []
    for number, line in enumerate(read_text_input(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str) or not text:
            raise BadInput(f"{path}:{number}: a prompt file's line is a JSON object with a non-empty \"text\"")
        prompts.append(text)
        if len(prompts) == truncate:
            break
    if not prompts:
        raise BadInput(f"{path}: the prompt file holds no prompt")
    return prompts


@functools.cache
def _unique_key_loader(repeatable: frozenset[str] = frozenset()):
    """yaml's SafeLoader, refusing a key given twice in one mapping (plain safe_load keeps the last, silently).

    A key in ``repeatable`` may repeat and keeps its last value, as Megatron's reader does: the MODEL_ARGS
    flags that cannot change inference numerics (Megatron-LM's hybrid cases give --init-method-std twice).
    """
    import yaml  # imported here so nox's own interpreter can list suites without PyYAML

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<' merges another mapping in: its keys may repeat by design
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader itself refuses it with its own message
                if duplicate and key not in repeatable:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r:.60}", key_node.start_mark)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


_BRACKETS = {ord(char): char for char in "[]{}"}
MAX_FLOW_DEPTH = 100  # PyYAML's scanner slows quadratically with nested [ / { (2000 levels: seconds)


def _flow_depth(text: str) -> int:
    """How deep [ and { nest (quotes ignored: only an upper bound matters)."""
    brackets = text.translate(collections.defaultdict(lambda: None, _BRACKETS))
    return max(itertools.accumulate(1 if char in "[{" else -1 for char in brackets), default=0)


def read_yaml(path: Path, repeatable: frozenset[str] = frozenset()) -> dict:
    import yaml

    text = read_text_input(path)
    if _flow_depth(text) > MAX_FLOW_DEPTH:
        raise BadInput(f"{path}: invalid YAML (lists or mappings nested more than {MAX_FLOW_DEPTH} deep)")
    loader = None
    try:
        loader = _unique_key_loader(repeatable)(text)  # the reader refuses non-printable characters here
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem and str(problem).startswith("duplicate key") else ""
        raise BadInput(f"{path}: invalid YAML{where}{why}") from None
    except RecursionError:
        raise BadInput(f"{path}: invalid YAML (nested too deeply)") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping at the top level")
    return data


def suites_root(project: Path) -> Path:
    return project / "suites"


def suite_names(project: Path) -> list[str]:
    root = suites_root(project)
    return sorted(path.parent.name for path in root.glob("*/model_config.yaml"))


def load_suite(project: Path, name: str) -> Suite:
    """The suite, every value checked and its Policy built, so that bad input stops a command before it runs."""
    check_name("suite", name)  # before any path is built from it
    folder = suites_root(project) / name
    if not (folder / "model_config.yaml").is_file():
        raise BadInput(f"unknown suite {name!r} (known: {', '.join(suite_names(project)) or 'none'})")
    config = read_yaml(folder / "model_config.yaml", NO_EFFECT_FLAGS)
    sidecar = read_yaml(folder / "logitsmatch.yaml")
    source = f"{folder}/model_config.yaml"

    unknown = set(config) - MEGATRON_KEYS
    if unknown:
        raise BadInput(f"{source}: unknown top-level key {sorted(unknown, key=str)[0]!r}")
    unknown = set(sidecar) - SIDECAR_KEYS
    if unknown:
        raise BadInput(f"{folder}/logitsmatch.yaml: unknown key {sorted(unknown, key=str)[0]!r}")
    if config.get("MODE") != "inference":
        raise BadInput(f"{source}: MODE must be 'inference', got {config.get('MODE')!r}")

    model_args = config.get("MODEL_ARGS")
    env_vars = config.get("ENV_VARS") or {}
    metrics = config.get("METRICS")
    if not isinstance(model_args, dict) or not model_args:
        raise BadInput(f"{source}: MODEL_ARGS must be a non-empty mapping")
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and k and isinstance(v, (str, int, float, bool)) for k, v in env_vars.items()
    ):
        raise BadInput(f"{source}: ENV_VARS must map names to scalar values")
    if not isinstance(metrics, list) or not all(isinstance(metric, str) for metric in metrics):
        raise BadInput(f"{source}: METRICS must be a list of metric names")
    check_known(model_args, source)
    check_values(model_args, source)

    synthetic = sidecar.get("synthetic_checkpoint") or {}
    if not isinstance(synthetic, dict) or not isinstance(synthetic.get("model"), str):
        raise BadInput(f"{folder}/logitsmatch.yaml: synthetic_checkpoint.model must name a file in model_configs/")
    unknown = set(synthetic) - SYNTHETIC_KEYS
    if unknown:
        raise BadInput(f"{folder}/logitsmatch.yaml: unknown key synthetic_checkpoint.{sorted(unknown, key=str)[0]}")
    scaled_down = synthetic.get("scaled_down")
    if scaled_down is not None and not (isinstance(scaled_down, str) and scaled_down.strip()):
        raise BadInput(f"{folder}/logitsmatch.yaml: synthetic_checkpoint.scaled_down must say why, as text")
    world_size = sidecar.get("world_size", DEFAULT_WORLD_SIZE)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise BadInput(f"{folder}/logitsmatch.yaml: world_size must be a positive integer")
    seed = synthetic.get("seed", 1234)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise BadInput(f"{folder}/logitsmatch.yaml: synthetic_checkpoint.seed must be an integer in [0, 2**32)")
    tokenizer_model = sidecar.get("tokenizer_model", "")
    if not isinstance(tokenizer_model, str):
        raise BadInput(f"{folder}/logitsmatch.yaml: tokenizer_model must be a path relative to the project")
    timeout = sidecar.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise BadInput(f"{folder}/logitsmatch.yaml: timeout_s must be a positive number")
    prompt_file_standin = sidecar.get("prompt_file")
    if prompt_file_standin is not None and not (isinstance(prompt_file_standin, str) and prompt_file_standin):
        raise BadInput(f"{folder}/logitsmatch.yaml: prompt_file must be a path relative to the project")
    driver = sidecar.get("driver")
    if driver is not None and driver not in DRIVERS:
        raise BadInput(f"{folder}/logitsmatch.yaml: driver must be one of {', '.join(DRIVERS)}, got {driver!r:.60}")
    comparison = sidecar.get("comparison")
    if comparison is not None and not isinstance(comparison, dict):
        raise BadInput(f"{folder}/logitsmatch.yaml: comparison must be a mapping")
    try:
        policy = Policy.from_suite(metrics, comparison)
    except BadInput as exc:
        raise BadInput(f"{folder}: {exc}") from None
    return Suite(
        name=name,
        folder=folder,
        env_vars={key: str(value) for key, value in env_vars.items()},
        model_args=model_args,
        metrics=metrics,
        synthetic_model=synthetic["model"],
        synthetic_seed=seed,
        tokenizer_model=tokenizer_model,
        timeout_s=float(timeout),
        policy=policy,
        world_size=world_size,
        scaled_down=scaled_down.strip() if scaled_down else None,
        prompt_file_standin=prompt_file_standin,
        driver=driver,
    )


def load_architecture(project: Path, model: str) -> dict:
    """model_configs/<model>.yaml"""
    return read_yaml(project / "model_configs" / f"{model}.yaml")
