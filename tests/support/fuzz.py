"""Generated bad input for `logitsmatch compare` and the suite loader, shared by tests/test_fuzz.py
and benchmarks/fuzz_campaign.py (which runs >= 1,000 inputs and prints the figures).

Every input goes through ``logitsmatch.cli.main`` in process (thousands fit in
a minute) with stdout and stderr captured; an input passes when the exit code
is documented (0 match, 1 drift, 2 bad input) and a bad input is one stderr
line. For `run` the launch is replaced by a sentinel (no ranks start), the
checkpoint cache by a stub and the toolchain check by a no-op.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logitsmatch import cli
from logitsmatch.judge.golden_io import NON_REQUEST_KEYS
from support import DEFAULT_TOOLCHAIN, PROJECT, TINY_SUITE

GOLDEN = PROJECT / "golden_values" / TINY_SUITE / f"golden_values_cpu_{DEFAULT_TOOLCHAIN}.json"
DOCUMENTED = {0, 1, 2}


# --- strategies ------------------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, -1e-320]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), FLOATS,
    st.text(max_size=12), st.sampled_from(["[1,2]", '{"a": 1}', "NaN", "", "1e999"]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)
# Strings JSON can carry but UTF-8 cannot (lone surrogates, written as \\uXXXX escapes), and control characters.
ODD_TEXT = st.one_of(
    st.sampled_from(["\ud800", "x\udfffy", "\ud83d", "\udc00\ud800", "\x00\x1b[31m", "\u2028", "\ufffe"]),
    st.text(alphabet=st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=6),
)
REQUEST_FIELDS = ["generated_tokens", "logprobs", "generated_text", "input_prompt", "latency", "routing_indices"]
RUN_KEYS = ["throughput", "mem-max-allocated-bytes", "lifetime_prefill_token_count"]


@st.composite
def golden_documents(draw, base: dict) -> dict:
    """A real golden with a handful of structural or value mutations."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["value", "delete", "truncate", "element", "add_key", "run_key", "rename", "top"]
                                    + ["perturb"] * 8))
        rid = draw(st.sampled_from(sorted(doc) or ["0"]))
        request = doc.get(rid)
        if kind == "perturb" and isinstance(request, dict):
            # Still well-formed: moved logprobs (NaN/inf included), other tokens, fewer tokens, fewer requests.
            action = draw(st.sampled_from(["logprob", "token", "shorten", "drop_request", "text", "odd_text",
                                           "huge_token", "named_request", "odd_request_id"]))
            logprobs, tokens = request.get("logprobs"), request.get("generated_tokens")
            if action == "logprob" and isinstance(logprobs, list) and logprobs:
                logprobs[draw(st.integers(0, len(logprobs) - 1))] = draw(FLOATS)
            elif action == "token" and isinstance(tokens, list) and tokens:
                tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.integers(0, 3071))
            elif action == "shorten" and isinstance(tokens, list) and isinstance(logprobs, list):
                cut = draw(st.integers(0, len(tokens)))
                prompt = len(logprobs) - len(tokens)
                request["generated_tokens"], request["logprobs"] = tokens[:cut], logprobs[: prompt + cut]
            elif action == "drop_request" and len(doc) > 1:
                doc.pop(rid)
            elif action == "text":
                request["generated_text"] = draw(st.text(max_size=20))
            elif action == "odd_text":  # well-formed: reaches the comparison and every report writer
                request["generated_text"] = draw(ODD_TEXT) + request.get("generated_text", "")
            elif action == "huge_token" and isinstance(tokens, list) and tokens:
                tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.sampled_from([2**63, 2**64, 2**64 + 7, -(2**63) - 1, 10**30]))
            elif action == "named_request":  # a non-numeric top-level key: a request id, as in Megatron
                doc[draw(st.sampled_from(["foo", "note", "config", "version"]))] = copy.deepcopy(request)
            elif action == "odd_request_id":
                doc[draw(ODD_TEXT)] = copy.deepcopy(request)
            continue
        if kind == "top":
            return draw(st.one_of(JSON_VALUES, st.just({})))
        if kind == "run_key":
            doc[draw(st.sampled_from(RUN_KEYS))] = draw(JSON_VALUES)
        elif kind == "add_key":
            doc[draw(st.text(max_size=4))] = draw(JSON_VALUES)
        elif kind == "rename":
            doc[draw(st.text(max_size=4))] = doc.pop(rid, None)
        elif not isinstance(request, dict):
            doc[rid] = draw(JSON_VALUES)
        else:
            field = draw(st.sampled_from(REQUEST_FIELDS))
            if kind == "value":
                request[field] = draw(JSON_VALUES)
            elif kind == "delete":
                request.pop(field, None)
            elif kind == "truncate" and isinstance(request.get(field), list):
                request[field] = request[field][: draw(st.integers(0, len(request[field])))]
            elif kind == "element" and isinstance(request.get(field), list) and request[field]:
                index = draw(st.integers(0, len(request[field]) - 1))
                request[field][index] = draw(SCALARS)
    return doc


def encode(doc) -> bytes:
    """json.dumps, writing NaN/Infinity tokens as Python does."""
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def golden_bytes(draw, base: dict) -> bytes:
    """The file as bytes: a mutated document, maybe cut short, nested deep, or noise."""
    kind = draw(st.sampled_from(["doc"] * 8 + ["truncated", "noise", "empty", "deep", "bom", "text_wrapped"]))
    if kind == "noise":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"   \n", b"\x00"]))
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    raw = encode(draw(golden_documents(base)))
    if kind == "truncated":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "text_wrapped":
        return json.dumps(raw.decode()).encode()
    return raw


OPTION_VALUES = st.one_of(
    st.text(max_size=8), st.sampled_from(["nan", "inf", "-1", "0", "1e-3", "1e400", "3", "-0", "megatron",
                                          "deterministic", "APPROXIMATE", "logprobs,tokens", ",", "1_000"]),
)


@st.composite
def compare_options(draw, report_dir: Path) -> list[str]:
    """Option values as text, written --flag=value so a value like '-1' stays a value."""
    options = []
    valid = {"--mode": ["megatron", "deterministic", "approximate"], "--abs-tol": ["0", "1e-3", "0.5"],
             "--rel-tol": ["0", "1e-5"], "--failure-budget": ["0", "3"],
             "--metrics": ["logprobs", "generated_tokens,logprobs", "generated_text"]}
    for flag, good in valid.items():
        choice = draw(st.integers(0, 7))
        if choice == 0:
            options.append(f"{flag}={draw(OPTION_VALUES)}")
        elif choice == 1:
            options.append(f"{flag}={draw(st.sampled_from(good))}")
    if draw(st.booleans()):
        options.append(draw(st.sampled_from(["--nan-equal", "--no-nan-equal"])))
    for flag in ("--json", "--markdown", "--junit"):
        if draw(st.integers(0, 4)) == 0:
            name = draw(st.sampled_from(["r.out", "missing/dir/r.out", "", "."]))
            options.append(f"{flag}={report_dir / name if name else ''}")
    return options


# --- running one input through the CLI ---------------------------------------------------------


class Tally:
    def __init__(self, name: str):
        self.name = name
        self.inputs = 0
        self.codes: dict[int, int] = {}
        self.tracebacks: list[str] = []
        self.multiline: list[str] = []
        self.undocumented: list[str] = []
        self.features: dict[str, int] = {}

    def saw(self, *files: bytes) -> None:
        """Count the inputs that hold what the writers and the parser must survive."""
        for name, present in FEATURES.items():
            if any(present(raw) for raw in files):
                self.features[name] = self.features.get(name, 0) + 1

    def record(self, argv: list[str], outcome) -> None:
        self.inputs += 1
        code, stderr, error = outcome
        if error is not None:
            self.tracebacks.append(f"{argv}: {error}")
            return
        self.codes[code] = self.codes.get(code, 0) + 1
        if code not in DOCUMENTED:
            self.undocumented.append(f"{argv}: exit {code}")
        if code == 2 and len(stderr.strip().splitlines()) != 1:
            self.multiline.append(f"{argv}: {stderr[:300]!r}")

    @property
    def problems(self) -> int:
        return len(self.tracebacks) + len(self.multiline) + len(self.undocumented)


def run_cli(argv: list[str]) -> tuple[int, str, str | None]:
    """cli.main in process: (exit code, stderr, the escaped exception's traceback or None)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: usage + error, exit 2
            code = exc.code if isinstance(exc.code, int) else 2
        except WouldLaunch:
            code = 0
        except BaseException:  # noqa: BLE001 - exactly what the campaign counts
            return -1, err.getvalue(), traceback.format_exc(limit=-3)
    return code, err.getvalue(), None


def _named_keys(raw: bytes) -> bool:
    """A top-level key that is not a number and not run-level (a request id by Megatron's rule)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and any(not key.isdigit() and key not in NON_REQUEST_KEYS for key in doc)


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_HUGE_INT = re.compile(rb"(?<![\d.eE+-])-?\d{20,}(?![\d.eE])")
FEATURES = {
    "lone surrogates": lambda raw: bool(_SURROGATE.search(raw)),
    "integers beyond 64 bits": lambda raw: bool(_HUGE_INT.search(raw)),
    "non-request top-level keys": _named_keys,
}


class WouldLaunch(Exception):
    """The suite passed every check; the ranks would start now."""


# --- the compare campaign ----------------------------------------------------------------------


def fuzz_compare(examples: int, work: Path, seed: int) -> Tally:
    tally = Tally("compare")
    base = json.loads(GOLDEN.read_text())
    work.mkdir(parents=True, exist_ok=True)
    golden_path, current_path = work / "golden.json", work / "current.json"

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(golden=golden_bytes(base), current=golden_bytes(base), options=compare_options(work),
           real_golden=st.sampled_from([True, True, True, False]))
    def one(golden, current, options, real_golden):
        golden_path.write_bytes(GOLDEN.read_bytes() if real_golden else golden)
        current_path.write_bytes(current)
        argv = ["compare", str(golden_path), str(current_path), *options]
        tally.saw(golden_path.read_bytes(), current)
        tally.record(argv, run_cli(argv))

    _seeded(one, seed)()
    return tally


# --- the suite / config loader campaign ----------------------------------------------------------


UNSAFE_YAML = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "&a [*a]",
    "? [1, 2]\n: x",
    "\t- tab",
    "MODE: inference\nMODE: inference",
    "%YAML 9.9\n---\nx: 1",
]


@st.composite
def yaml_texts(draw, base: dict, protect: set[str] = frozenset()) -> str:
    """A mutated mapping as YAML, or raw text mutations of it."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["value", "delete", "add", "nested_value", "nested_delete", "nested_add"]))
        keys = sorted((k for k in doc if k not in protect), key=repr) if isinstance(doc, dict) else []
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if kind == "value":
            doc[key] = draw(JSON_VALUES)
        elif kind == "delete":
            doc.pop(key)
        elif kind == "add":
            doc[draw(st.one_of(st.text(max_size=8), st.integers(), st.booleans()))] = draw(JSON_VALUES)
        elif isinstance(doc.get(key), dict) and doc[key]:
            inner = doc[key]
            inner_key = draw(st.sampled_from(sorted(inner, key=repr)))
            if kind == "nested_value":
                inner[inner_key] = draw(JSON_VALUES)
            elif kind == "nested_delete":
                inner.pop(inner_key)
            else:
                inner[draw(st.sampled_from(["--frobnicate", "--num-layers", "--tensor-model-parallel-size",
                                            "--pipeline-model-parallel-size", "--prompts", "--top_k",
                                            "--temperature", "--return-log-probs", "--tokenizer-type",
                                            "--inference-max-seq-length", "--num-tokens-to-generate"]))] = draw(JSON_VALUES)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError, TypeError):
        text = json.dumps(doc, default=str)
    kind = draw(st.sampled_from(["text"] * 6 + ["truncate", "unsafe", "noise", "empty"]))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "unsafe":
        return draw(st.sampled_from(UNSAFE_YAML))
    if kind == "noise":
        return draw(st.text(max_size=80))
    if kind == "empty":
        return ""
    return text


def make_project(root: Path) -> Path:
    """A throwaway project: the real pyproject, model configs and tokenizer, one suite to mutate."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "model_configs", root / "model_configs", dirs_exist_ok=True)
    shutil.copytree(PROJECT / "suites" / TINY_SUITE, root / "suites" / TINY_SUITE, dirs_exist_ok=True)
    return root


@contextlib.contextmanager
def stubbed_launch(fake_checkpoint: Path, env: dict[str, str]):
    """No ranks, no checkpoint writing, no toolchain check: only the loader and planner run."""
    from logitsmatch.cli import run as run_cli
    from logitsmatch.run import launcher, synthetic_weights

    fake_checkpoint.mkdir(parents=True, exist_ok=True)
    (fake_checkpoint / "metadata.json").write_text("{}")
    saved = (launcher.launch, synthetic_weights.ensure_checkpoint, run_cli.verify_toolchain)
    saved_env = {key: os.environ.get(key) for key in env}

    def launch(run, world_size, deadline_s, env):
        """What the real launch needs of its inputs before it starts anything, then the sentinel."""
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str) or "\0" in key + value or "=" in key:
                raise TypeError(f"environment entry {key!r}={value!r} cannot be passed to a process")
        if not (isinstance(deadline_s, float) and 0 < deadline_s < float("inf")):
            raise ValueError(f"deadline {deadline_s!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world size {world_size!r}")
        run.read_plan()
        raise WouldLaunch()

    launcher.launch = launch
    synthetic_weights.ensure_checkpoint = lambda spec, cache, timeout: (fake_checkpoint, "0" * 64)
    run_cli.verify_toolchain = lambda toolchain: None
    os.environ.update(env)
    try:
        yield
    finally:
        launcher.launch, synthetic_weights.ensure_checkpoint, run_cli.verify_toolchain = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fuzz_suites(examples: int, work: Path, seed: int, toolchain: str) -> Tally:
    tally = Tally("suite loader")
    project = make_project(work / "project")
    folder = project / "suites" / TINY_SUITE
    bases = {
        folder / "model_config.yaml": yaml.safe_load((PROJECT / "suites" / TINY_SUITE / "model_config.yaml").read_text()),
        folder / "logitsmatch.yaml": yaml.safe_load((PROJECT / "suites" / TINY_SUITE / "logitsmatch.yaml").read_text()),
        project / "model_configs" / "tiny_gpt.yaml": yaml.safe_load((PROJECT / "model_configs" / "tiny_gpt.yaml").read_text()),
    }
    originals = {path: path.read_text() for path in bases}
    names = st.sampled_from([TINY_SUITE] * 8 + ["", "../suites", "no_such_suite", "a/b", TINY_SUITE + "/"])
    toolchains = st.sampled_from([toolchain] * 8 + ["", "py0.0-nope", "default"])
    extras = st.lists(st.sampled_from([["--timeout", "0.5"], ["--platform", "gpu"], ["--platform", "mars"],
                                       ["--checkpoint", str(work / "nope")], ["--tokenizer-model", str(work / "nope.json")],
                                       ["--tokenizer-model", str(folder / "model_config.yaml")],
                                       ["--bind-host", "127.0.0.1"]]), max_size=2)

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(which=st.sets(st.sampled_from(sorted(bases, key=str)), max_size=3), data=st.data(),
           name=names, toolchain_name=toolchains, extra=extras)
    def one(which, data, name, toolchain_name, extra):
        for path, text in originals.items():
            path.write_text(text)
        for path in which:
            protect = {"MODE"} if path.name == "model_config.yaml" and data.draw(st.booleans()) else set()
            path.write_text(data.draw(yaml_texts(bases[path], protect)))
        argv = ["run", name, "--toolchain", toolchain_name, *[arg for pair in extra for arg in pair]]
        shutil.rmtree(work / "results", ignore_errors=True)  # run dirs are named by second and pid
        tally.record(argv, run_cli(argv))

    with stubbed_launch(work / "fake_checkpoint", {"LOGITSMATCH_ROOT": str(project),
                                                   "LOGITSMATCH_RESULTS": str(work / "results"),
                                                   "LOGITSMATCH_CACHE": str(work / "cache")}):
        _seeded(one, seed)()
    return tally


def _seeded(test, seed: int):
    from hypothesis import seed as hypothesis_seed

    return hypothesis_seed(seed)(test)


# --- subprocess replay ---------------------------------------------------------------------------


def replay_in_subprocesses(count: int, work: Path, seed: int) -> Tally:
    """The real CLI process on a sample of generated compare inputs: no 'Traceback' on stderr."""
    tally = Tally("subprocess replay")
    base = json.loads(GOLDEN.read_text())
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT / "tools"), os.environ.get("PYTHONPATH")]))}

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(current=golden_bytes(base))
    def one(current):
        path = work / "current.json"
        path.write_bytes(current)
        argv = ["compare", str(GOLDEN), str(path)]
        completed = subprocess.run([sys.executable, "-m", "logitsmatch", *argv], capture_output=True, text=True,
                                   env=env, cwd=work, timeout=120)
        error = completed.stderr[-2000:] if "Traceback" in completed.stderr else None
        tally.record(argv, (completed.returncode, completed.stderr, error))

    _seeded(one, seed)()
    return tally
