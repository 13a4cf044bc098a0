"""Generated bad input for `logitsmatch compare` and the suite loader, shared by tests/cli/test_fuzz.py
and scripts/fuzz_campaign.py (which runs >= 1,000 inputs and prints the figures).

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
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
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
                tokens[draw(st.integers(0, len(tokens) - 1))] = draw(
                    st.sampled_from([2**63, 2**64, 2**64 + 7, -(2**63) - 1, 10**30])
                )
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


class WouldLaunch(BaseException):
    """The suite passed every check; the ranks would start now (a BaseException: it must pass the CLI's
    internal-error handler, as KeyboardInterrupt does)."""


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
                inner[
                    draw(
                        st.sampled_from(
                            [
                                "--frobnicate",
                                "--num-layers",
                                "--tensor-model-parallel-size",
                                "--pipeline-model-parallel-size",
                                "--prompts",
                                "--top_k",
                                "--temperature",
                                "--return-log-probs",
                                "--tokenizer-type",
                                "--inference-max-seq-length",
                                "--num-tokens-to-generate",
                            ]
                        )
                    )
                ] = draw(JSON_VALUES)
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
    from logitsmatch.flows import run_suite
    from logitsmatch.run import launcher, synthetic_weights

    fake_checkpoint.mkdir(parents=True, exist_ok=True)
    (fake_checkpoint / "metadata.json").write_text("{}")
    saved = (launcher.launch, synthetic_weights.ensure_checkpoint, run_suite.verify_toolchain)
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
    run_suite.verify_toolchain = lambda toolchain: None
    os.environ.update(env)
    try:
        yield
    finally:
        launcher.launch, synthetic_weights.ensure_checkpoint, run_suite.verify_toolchain = saved
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
        folder / "model_config.yaml": yaml.safe_load(
            (PROJECT / "suites" / TINY_SUITE / "model_config.yaml").read_text()
        ),
        folder / "logitsmatch.yaml": yaml.safe_load((PROJECT / "suites" / TINY_SUITE / "logitsmatch.yaml").read_text()),
        project / "model_configs" / "tiny_gpt.yaml": yaml.safe_load(
            (PROJECT / "model_configs" / "tiny_gpt.yaml").read_text()
        ),
    }
    originals = {path: path.read_text() for path in bases}
    names = st.sampled_from([TINY_SUITE] * 8 + ["", "../suites", "no_such_suite", "a/b", TINY_SUITE + "/"])
    toolchains = st.sampled_from([toolchain] * 8 + ["", "py0.0-nope", "default"])
    extras = st.lists(
        st.sampled_from(
            [
                ["--timeout", "0.5"],
                ["--platform", "gpu"],
                ["--platform", "mars"],
                ["--checkpoint", str(work / "nope")],
                ["--tokenizer-model", str(work / "nope.json")],
                ["--tokenizer-model", str(folder / "model_config.yaml")],
                ["--bind-host", "127.0.0.1"],
            ]
        ),
        max_size=2,
    )

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
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT / "tools"), os.environ.get("PYTHONPATH")])),
    }

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


# --- hostile file inputs for every subcommand, each in its own process ----------------------------
#
# Every case is a real `python -m logitsmatch ...` process (10 s limit) under a chosen umask, with
# crash logs kept in the case's own state folder. A case passes when stderr holds no traceback, the
# process ends in time with a code it may end with (never 70, the internal-error code: a crash), a bad
# input is one stderr line, every input file is byte-identical afterwards and every output it made has
# the umask's mode. ``hostile_cases`` names every case of issue 17 and adds generated ones from a seed.

CASE_TIMEOUT_S = 10
BAD = frozenset({2})
VERDICT = frozenset({0, 1})
CRASH = 70  # logitsmatch.errors.ExitCode.INTERNAL


def fuzz_seed() -> int:
    """LOGITSMATCH_FUZZ_SEED, else a fresh one (printed with every failure, so a failure can be replayed)."""
    import random

    text = os.environ.get("LOGITSMATCH_FUZZ_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


class Case:
    """One command line over prepared files: what it may exit with, what it must leave unchanged or create."""

    def __init__(self, name: str, argv: list[str], expect: frozenset[int], inputs=(), outputs=(), fragment=None,
                 env=None):
        self.name, self.argv, self.expect, self.fragment = name, [str(a) for a in argv], expect, fragment
        self.inputs, self.outputs, self.env = [Path(p) for p in inputs], [Path(p) for p in outputs], env or {}


class Outcome:
    def __init__(self, case: Case, code: int | None, seconds: float, stderr: str, problems: list[str]):
        self.case, self.code, self.seconds, self.stderr, self.problems = case, code, seconds, stderr, problems

    @property
    def hang(self) -> bool:
        return self.code is None

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr

    @property
    def crash_as_drift(self) -> bool:
        """Exit 1 where the input is bad: what CI would read as numerical drift."""
        return self.code == 1 and 1 not in self.case.expect


def _fingerprint(path: Path):
    """What must not change: a regular file's bytes, else the kind of thing the path is."""
    import hashlib
    import stat as stat_module

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat_module.S_ISREG(info.st_mode):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return stat_module.S_IFMT(info.st_mode), os.readlink(path) if stat_module.S_ISLNK(info.st_mode) else None


def run_case(case: Case, work: Path, umask: int) -> Outcome:
    import time

    state = work / "state"
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT / "tools"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath,
           "XDG_STATE_HOME": str(state), "LOGITSMATCH_CACHE": str(work / "cache"), "LOGITSMATCH_ROOT": str(PROJECT),
           **case.env}
    before = {path: _fingerprint(path) for path in case.inputs}
    existed = {path for path in case.outputs if path.exists()}
    started = time.monotonic()
    try:
        completed = subprocess.run([sys.executable, "-m", "logitsmatch", *case.argv], capture_output=True, text=True,
                                   errors="backslashreplace", env=env, cwd=work, stdin=subprocess.DEVNULL,
                                   timeout=CASE_TIMEOUT_S, preexec_fn=lambda: os.umask(umask))
        code, stderr = completed.returncode, completed.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        stderr = exc.stderr.decode(errors="backslashreplace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.monotonic() - started
    problems = []
    if code is None:
        problems.append(f"no exit within {CASE_TIMEOUT_S} s (a hang)")
    elif code == CRASH or code not in case.expect:
        problems.append(f"exit {code}, expected {sorted(case.expect)}")
    if "Traceback" in stderr:
        problems.append("a traceback on stderr")
    lines = stderr.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: its usage, then one error line
        lines = lines[-1:]
    if code == 2 and len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines for a bad input")
    if code == 2 and case.fragment and not any(case.fragment in line for line in lines):
        problems.append(f"stderr lacks {case.fragment!r}")
    crash_logs = list(state.glob("logitsmatch/crash-*.log")) if state.is_dir() else []
    if crash_logs:
        problems.append(f"crash log {crash_logs[0].name}: {crash_logs[0].read_text()[-300:]!r}")
        shutil.rmtree(state, ignore_errors=True)
    for path, fingerprint in before.items():
        if _fingerprint(path) != fingerprint:
            problems.append(f"input {path.name} changed")
    for path in case.outputs:
        if path.is_file() and not path.is_symlink() and path not in existed:
            mode = path.stat().st_mode & 0o777
            if mode != 0o666 & ~umask:
                problems.append(f"output {path.name} has mode {mode:o}, umask {umask:03o} gives {0o666 & ~umask:o}")
    return Outcome(case, code, seconds, stderr[-600:], problems)


def _json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


def _special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero and a folder, where a regular file is expected."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo, zero, directory = folder / "fifo.json", folder / "zero.json", folder / "dir.json"
    if not fifo.exists():
        os.mkfifo(fifo)
    if not zero.is_symlink():
        zero.symlink_to("/dev/zero")
    directory.mkdir(exist_ok=True)
    return {"FIFO": fifo, "/dev/zero link": zero, "directory": directory}


def _with(base: dict, change) -> dict:
    doc = copy.deepcopy(base)
    change(doc)
    return doc


def _capture(folder: Path, outputs: list[tuple[str, list, str]]) -> Path:
    """A capture as `run --capture` writes it: rank 0's steps, module outputs and their values."""
    import numpy as np

    folder.mkdir(parents=True)
    lines = [{"kind": "header", "format": 1, "rank": 0, "decode_steps": 0, "values": True},
             {"kind": "step", "step": 0, "active_tokens": 4, "valid_ids_sha256": "ids", "padded_tokens": 8}]
    arrays = {}
    for order, (name, shape, dtype) in enumerate(outputs):
        key = f"v{order}"
        arrays[key] = np.full(shape, 0.5 + order, dtype=np.float32)
        lines.append({"kind": "output", "step": 0, "order": order, "name": name, "output": "0", "shape": shape,
                      "valid_shape": shape, "dtype": dtype, "sha256": name, "valid_sha256": f"{name}{shape}{dtype}",
                      "values": key})
    (folder / "rank-0.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    np.savez(folder / "rank-0.npz", **arrays)
    return folder


def hostile_cases(work: Path, seed: int, generated: int = 40) -> list[Case]:
    """Every hostile input of issue 17 for each subcommand that reads files, plus ``generated`` seeded ones."""
    import random

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    special = _special_files(work / "special")
    golden_doc = json.loads(GOLDEN.read_text())
    golden = work / "golden.json"
    golden.write_bytes(GOLDEN.read_bytes())
    out = work / "out"
    out.mkdir(exist_ok=True)
    cases: list[Case] = []

    def compare(name, current_doc_or_path, expect=BAD, fragment=None, extra=(), outputs=()):
        current = current_doc_or_path if isinstance(current_doc_or_path, Path) else \
            _json(work / f"current-{len(cases)}.json", current_doc_or_path)
        cases.append(Case(f"compare: {name}", ["compare", golden, current, *extra], expect, [golden, current],
                          outputs, fragment))

    # compare: special files on either side, the size cap, and what a parser would get wrong
    for kind, path in special.items():
        cases.append(Case(f"compare: golden is a {kind}", ["compare", path, golden], BAD, [golden, path], (),
                          "expected a regular file"))
        cases.append(Case(f"compare: current is a {kind}", ["compare", golden, path], BAD, [golden, path]))
    cases.append(Case("compare: a golden over --max-input-bytes",
                      ["compare", golden, golden, "--max-input-bytes", "1K"],
                      BAD, [golden], (), "over the input limit"))
    compare("a logprob true", _with(golden_doc, lambda d: d["0"]["logprobs"].__setitem__(3, True)), fragment="boolean")
    compare("a logprob as text", _with(golden_doc, lambda d: d["0"]["logprobs"].__setitem__(3, "-1.5")),
            fragment="root['0']['logprobs'][3]")
    compare("a negative token id", _with(golden_doc, lambda d: d["1"]["generated_tokens"].__setitem__(2, -4)),
            fragment="non-negative")
    compare("a boolean token id", _with(golden_doc, lambda d: d["1"]["generated_tokens"].__setitem__(2, False)))
    compare("an expert id of 1.5", _with(golden_doc, lambda d: d["0"].update(routing_indices=[[[1, 1.5]]])),
            fragment="root['0']['routing_indices'][0][0][1]")
    compare("routing_indices holding strings", _with(golden_doc, lambda d: d["0"].update(routing_indices=[[["3"]]])))
    compare("a negative expert id", _with(golden_doc, lambda d: d["0"].update(routing_indices=[[[0, -1]]])))
    duplicate = work / "duplicate.json"
    text = json.dumps(golden_doc)
    duplicate.write_text(text[:-1] + ', "2": ' + json.dumps(golden_doc["2"]) + "}")
    compare("a duplicate request id", duplicate, fragment="request id '2' appears twice")
    inner_duplicate = work / "inner_duplicate.json"
    inner_duplicate.write_text(text.replace('"generated_tokens":', '"logprobs": [], "generated_tokens":', 1))
    compare("a duplicate key inside a request", inner_duplicate, fragment="appears twice")
    double = work / "double.json"
    double.write_text(json.dumps(text))
    compare("a double-encoded file (as Megatron writes some)", double, expect=frozenset({0}))
    deep = work / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    compare("100000 nested lists", deep)
    deep_object = work / "deep_object.json"
    deep_object.write_text('{"0": ' * 5000 + "1" + "}" * 5000)
    compare("5000 nested objects", deep_object)
    infinite = work / "inf.json"
    infinite.write_text(text.replace(json.dumps(golden_doc["0"]["logprobs"][3]), "1e999", 1))
    compare("a logprob of 1e999 (inf)", infinite, expect=frozenset({1}))
    truncated = work / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    compare("a truncated file", truncated, fragment="malformed JSON")
    noise = work / "noise.json"
    noise.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    compare("binary noise", noise)
    surrogate = _with(golden_doc, lambda d: d["0"].update(generated_text="\ud800" + d["0"]["generated_text"]))
    reports = [out / "s.json", out / "s.md", out / "s.xml", out / "s.deepdiff.json"]
    compare("a lone surrogate in generated_text, every report", surrogate, expect=VERDICT,
            extra=["--json", reports[0], "--markdown", reports[1], "--junit", reports[2], "--deepdiff", reports[3],
                   "--metrics", "generated_tokens,logprobs,generated_text"], outputs=reports)
    compare("--metrics ,", golden_doc, extra=["--metrics", ","], fragment="nothing to check")
    compare("--metrics none of which is in either file", golden_doc, extra=["--metrics", "routing_indices"],
            fragment="nothing to check")
    cases.append(Case("compare: --json GOLDEN (the report over an input)",
                      ["compare", golden, golden, "--json", golden],
                      BAD, [golden], (), "is the input"))
    link = out / "link-to-golden.json"
    if not link.is_symlink():
        link.symlink_to(golden)
    cases.append(Case("compare: --markdown through a link to the golden",
                      ["compare", golden, golden, "--markdown", link],
                      BAD, [golden, link], (), "is the input"))
    cases.append(Case("compare: --markdown into a missing folder", ["compare", golden, golden, "--markdown",
                                                                    out / "missing" / "r.md"], BAD, [golden]))
    cases.append(Case("compare: --json at a folder", ["compare", golden, golden, "--json", special["directory"]], BAD,
                      [golden]))
    cases.append(Case("compare: --max-input-bytes garbage",
                      ["compare", golden, golden, "--max-input-bytes", "lots"], BAD,
                      [golden]))
    cases.append(Case("compare: reports with the umask's mode", ["compare", golden, golden, "--json", out / "p.json",
                                                                 "--junit", out / "p.xml"], frozenset({0}), [golden],
                      [out / "p.json", out / "p.xml"]))

    # compare-toolchains with files
    cases.append(Case("compare-toolchains: a FIFO and a file", ["compare-toolchains", special["FIFO"], golden], BAD,
                      [golden]))
    cases.append(Case("compare-toolchains: a file and a /dev/zero link", ["compare-toolchains", golden,
                                                                          special["/dev/zero link"]], BAD, [golden]))
    cases.append(Case("compare-toolchains: --platform ../x",
                      ["compare-toolchains", golden, golden, "--platform", "../x"],
                      BAD, [golden], (), "unknown platform"))

    # record, matrix: names that are paths, platforms that are not known, nothing to tabulate
    empty_results = {"LOGITSMATCH_RESULTS": str(work / "no-results")}
    escape = work / "x" / "s1"
    escape.mkdir(parents=True, exist_ok=True)
    (escape / "model_config.yaml").write_text((PROJECT / "suites" / TINY_SUITE / "model_config.yaml").read_text())
    relative = os.path.relpath(escape, PROJECT / "suites")
    for command in (["record"], ["determinism"], ["invariance"]):
        cases.append(Case(f"{command[0]}: a suite name that is a path ({relative})",
                          [*command, relative, "--toolchain", DEFAULT_TOOLCHAIN], BAD, [escape / "model_config.yaml"],
                          (), "not a plain name", env=empty_results))
    cases.append(Case("record: an absolute suite name", ["record", escape, "--toolchain", DEFAULT_TOOLCHAIN], BAD,
                      env=empty_results))
    for platform in ("mars", "../../etc", "cpu/..", "cpu-tp1-fp64"):
        cases.append(Case(f"record: --platform {platform}", ["record", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                                                             "--platform", platform], BAD, (), (), "unknown platform",
                          env=empty_results))
    cases.append(Case("matrix: a fresh checkout (--source results, nothing there)",
                      ["matrix", "--source", "results", "--suite", TINY_SUITE, "--out", out / "m0"], BAD, (), (),
                      "nothing to tabulate", env=empty_results))
    blocker = out / "a-file"
    blocker.write_text("not a folder")
    cases.append(Case("matrix: --out at an existing file", ["matrix", "--source", "goldens", "--suite", TINY_SUITE,
                                                            "--out", blocker], BAD, [blocker], (), "not a folder"))
    for kind, path in special.items():
        cases.append(Case(f"matrix: --source a {kind}", ["matrix", "--source", path, "--suite", TINY_SUITE], BAD))
    cases.append(Case("matrix: --platform mars", ["matrix", "--platform", "mars"], BAD, (), (), "unknown platform"))
    cases.append(Case("matrix: --suite ../x", ["matrix", "--suite", "../x"], BAD, (), (), "not a plain name"))
    no_matplotlib = work / "no-matplotlib"
    (no_matplotlib / "matplotlib").mkdir(parents=True, exist_ok=True)
    (no_matplotlib / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    matrix_out = out / "m1"
    cases.append(Case("matrix: without matplotlib", ["matrix", "--source", "goldens", "--suite", TINY_SUITE,
                                                     "--out", matrix_out], VERDICT, (),
                      [matrix_out / "matrix.json", matrix_out / "matrix.md"],
                      env={"PYTHONPATH": os.pathsep.join([str(no_matplotlib), str(PROJECT / "tools")])}))

    # collect: a result whose provenance sidecar is a FIFO, a source that is a /dev/zero link
    tree = work / "tree" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "result.json").write_bytes(GOLDEN.read_bytes())
    if not (tree / "result.provenance.json").exists():
        os.mkfifo(tree / "result.provenance.json")
    cases.append(Case("collect: a provenance sidecar that is a FIFO", ["collect", work / "tree", "--into",
                                                                       out / "collected"], BAD, [tree / "result.json"]))
    cases.append(Case("collect: a source that is a /dev/zero link", ["collect", special["/dev/zero link"], "--into",
                                                                     out / "collected"], BAD))

    # localize: garbage capture files, unaligned captures, outputs
    captures = work / "captures"
    shutil.rmtree(captures, ignore_errors=True)
    a = _capture(captures / "a", [("embedding", [4, 8], "torch.float32"), ("decoder.layers.0", [4, 8], "torch.float32"),
                                  ("output_layer", [4, 16], "torch.float32")])
    b = _capture(captures / "b", [("embedding", [4, 8], "torch.float32"), ("decoder.layers.0", [4, 9], "torch.float32"),
                                  ("decoder.extra", [4, 8], "torch.float32"),
                                  ("output_layer", [4, 16], "torch.bfloat16")])
    capture_files = [*a.iterdir(), *b.iterdir()]
    reports = [out / "l.json", out / "l.md"]  # the PNG (matplotlib's import alone takes seconds): test_hardening
    cases.append(Case("localize: unaligned captures (one-sided module, shape and dtype mismatch), every report",
                      ["localize", a, b, "--json", reports[0], "--markdown", reports[1]],
                      frozenset({1}), capture_files, reports))
    cases.append(Case("localize: --markdown into a missing folder", ["localize", a, b, "--markdown",
                                                                     out / "missing" / "l.md"], BAD, capture_files))
    cases.append(Case("localize: --json over a capture file", ["localize", a, b, "--json", a / "rank-0.jsonl"], BAD,
                      capture_files, (), "is the input"))
    garbage = {
        "a bad rank file name": lambda f: (f / "rank-x.jsonl").write_text("{}\n"),
        "a list record": lambda f: (f / "rank-0.jsonl").write_text("[1, 2]\n"),
        "a record without name": lambda f: (f / "rank-0.jsonl").write_text(json.dumps(
            {"kind": "output", "step": 0, "order": 0, "output": "0", "valid_shape": [1], "valid_sha256": "x"}) + "\n"),
        "a garbage .npz": lambda f: (f / "rank-0.npz").write_bytes(b"PK\x03\x04garbage" * 10),
        "a .npz that is a FIFO": lambda f: ((f / "rank-0.npz").unlink(), os.mkfifo(f / "rank-0.npz")),
        "a rank file linked to /dev/zero": lambda f: ((f / "rank-0.jsonl").unlink(),
                                                       (f / "rank-0.jsonl").symlink_to("/dev/zero")),
        "binary noise in a rank file": lambda f: (f / "rank-0.jsonl").write_bytes(bytes(range(256))),
    }
    for index, (name, spoil) in enumerate(garbage.items()):
        folder = captures / f"garbage-{index}"
        shutil.copytree(a, folder)
        spoil(folder)
        cases.append(Case(f"localize: {name}", ["localize", folder, b], BAD, [*b.iterdir()]))
    cases.append(Case("localize: a capture that is a FIFO", ["localize", special["FIFO"], b], BAD))

    # make-vocab
    corpus = work / "corpus.txt"
    corpus.write_bytes((PROJECT / "model_configs" / "tokenizer" / "corpus.txt").read_bytes()
                       if (PROJECT / "model_configs" / "tokenizer" / "corpus.txt").is_file() else b"abc abd " * 400)
    for kind, path in special.items():
        cases.append(Case(f"make-vocab: --corpus is a {kind}", ["make-vocab", "--corpus", path, "--output",
                                                                 out / "v.json"], BAD))
    cases.append(Case("make-vocab: --output is a folder", ["make-vocab", "--corpus", corpus, "--output",
                                                           special["directory"], "--entries", "260"], BAD, [corpus]))
    cases.append(Case("make-vocab: --output is the corpus", ["make-vocab", "--corpus", corpus, "--output", corpus,
                                                             "--force"], BAD, [corpus], (), "is the input"))
    cases.append(Case("make-vocab: --check against a FIFO", ["make-vocab", "--corpus", corpus, "--output",
                                                             special["FIFO"], "--check", "--entries", "260"], BAD,
                      [corpus]))
    binary = work / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00" * 50)
    cases.append(Case("make-vocab: a corpus that is not UTF-8", ["make-vocab", "--corpus", binary, "--output",
                                                                 out / "v.json"], BAD, [binary], (), "not UTF-8"))

    # run (stopped before any rank: every suite here is refused while loading) and invariance/explain arguments
    project = make_project(work / "project")
    suite_folder = project / "suites" / TINY_SUITE
    sidecar = suite_folder / "logitsmatch.yaml"
    original = sidecar.read_bytes()
    run_env = {"LOGITSMATCH_ROOT": str(project), "LOGITSMATCH_RESULTS": str(work / "run-results")}
    run_argv = ["run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--candidate", "fuzz", "--timeout=-1"]
    hostile_yaml = {
        "binary": b"\x00\x01\x02\xff\xfe" * 40,
        "non-printable": b"timeout_s: 300\x01\n",
        "deep nesting": b"a: " + b"[" * 20_000,
        "a duplicate key": original + b"\ntimeout_s: 301\n",
        "a lone surrogate": b'description: "\\ud800"\n' + original + b"\nnope: 1\n",
        "an unsafe tag": b"timeout_s: !!python/object/apply:os.system ['true']\n",
        "a recursive alias": b"&a [*a]\n",
    }
    for index, (name, content) in enumerate(hostile_yaml.items()):
        folder = project / "suites" / f"hostile_{index}"
        shutil.copytree(suite_folder, folder, dirs_exist_ok=True)
        (folder / "logitsmatch.yaml").write_bytes(content)
        cases.append(Case(f"run: logitsmatch.yaml with {name}", [*run_argv[:1], folder.name, *run_argv[2:]], BAD,
                          [folder / "logitsmatch.yaml"], env=run_env))
    for kind, target in (("FIFO", None), ("/dev/zero link", "/dev/zero")):
        folder = project / "suites" / f"special_{kind.replace('/', '_').replace(' ', '_')}"
        shutil.copytree(suite_folder, folder, dirs_exist_ok=True)
        (folder / "logitsmatch.yaml").unlink()
        if target:
            (folder / "logitsmatch.yaml").symlink_to(target)
        else:
            os.mkfifo(folder / "logitsmatch.yaml")
        cases.append(Case(f"run: logitsmatch.yaml is a {kind}", [*run_argv[:1], folder.name, *run_argv[2:]], BAD,
                          env=run_env))
    for name in (relative, str(escape), "..", "a\\b", " "):
        cases.append(Case(f"run: suite name {name!r}", ["run", name, *run_argv[2:]], BAD, env=run_env))
    cases.append(Case("run: --platform mars", [*run_argv, "--platform", "mars"], BAD, (), (), "unknown platform",
                      env=run_env))
    cases.append(Case("invariance: one layout", ["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                                                 "--platform", "cpu", "--layouts", "tp1"], BAD, env=run_env))
    cases.append(Case("invariance: --layouts bogus", ["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                                                      "--platform", "cpu", "--layouts", "tp1,bogus"], BAD, env=run_env))
    cases.append(Case("invariance: --out at a file", ["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                                                      "--platform", "cpu", "--layouts", "tp1,tp2", "--out", blocker],
                      BAD, [blocker],
                      env=run_env))
    cases.append(Case("explain: a baseline python that is a FIFO", ["explain", "--baseline-python", special["FIFO"],
                                                                    "--candidate-python", special["FIFO"], TINY_SUITE],
                      BAD, env=run_env))
    cases.append(Case("explain: a suite name that is a path", ["explain", "--baseline-python", sys.executable,
                                                               "--candidate-python", sys.executable, relative], BAD,
                      env=run_env))

    cases += generated_cases(work / "generated", golden, golden_doc, rng, generated)
    return cases


_SCALARS = [True, False, None, "x", "", -1, 1.5, 2**64, -(2**63) - 1, [], {}, [1], {"a": 1}, "\ud800", 1e308]


def generated_cases(work: Path, golden: Path, golden_doc: dict, rng, count: int) -> list[Case]:
    """``count`` seeded compare inputs: a golden with one hostile value, a cut, a duplicate, a wrapping or noise."""
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    for index in range(count):
        doc = copy.deepcopy(golden_doc)
        rid = rng.choice(sorted(doc))
        field = rng.choice(["generated_tokens", "logprobs", "generated_text", "routing_indices", "input_prompt"])
        kind = rng.choice(["element", "field", "cut", "duplicate", "wrap", "noise", "request"])
        request = doc[rid]
        if kind == "element" and isinstance(request.get(field), list) and request[field]:
            request[field][rng.randrange(len(request[field]))] = rng.choice(_SCALARS)
        elif kind == "field":
            request[field] = rng.choice(_SCALARS)
        elif kind == "request":
            doc[rid] = rng.choice(_SCALARS)
        text = json.dumps(doc, allow_nan=True)
        if kind == "cut":
            text = text[: rng.randrange(len(text))]
        elif kind == "duplicate":
            text = text[:-1] + f', "{rid}": {json.dumps(doc[rid])}' + "}"
        elif kind == "wrap":
            text = json.dumps(text)
        path = work / f"generated-{index}.json"
        if kind == "noise":
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        else:
            path.write_text(text, errors="surrogatepass")
        sides = [golden, path] if rng.random() < 0.5 else [path, golden]
        cases.append(Case(f"generated {index} ({kind} {field} of request {rid})", ["compare", *sides],
                          frozenset({0, 1, 2}), [golden, path]))
    return cases


def run_cases(cases: list[Case], work: Path, seed: int) -> list[Outcome]:
    """Each case in its own process under a umask drawn from the seed (022, 027 or 002)."""
    import random

    rng = random.Random(seed)
    return [run_case(case, work, rng.choice([0o022, 0o027, 0o002])) for case in cases]


# --- typed-schema fuzzing of the metadata files: provenance sidecars and collection manifests ------------------

WRONG_VALUES = [7, 2.5, True, None, "text", [], ["a"], {}, {"x": 1}]


def _wrong_for(expected) -> list:
    """The WRONG_VALUES that are not of the type(s) ``expected`` (bool counts as int, as isinstance says)."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return [value for value in WRONG_VALUES if not isinstance(value, kinds)]


def metadata_cases(work: Path, seed: int, generated: int = 60) -> list[Case]:
    """``generated`` seeded cases, each one field of a provenance sidecar (SIDECAR_TYPES) or of a collection
    manifest entry given a value of the wrong type, read by compare, collect, matrix and verify;
    plus a sidecar and a manifest that are not objects. Every one must be bad input (2) naming the file."""
    import random
    import shutil as shell

    from logitsmatch.paths import provenance_path
    from logitsmatch.provenance import SIDECAR_TYPES

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    sidecar = json.loads(provenance_path(GOLDEN).read_text())
    fields = list(SIDECAR_TYPES.items())
    cases: list[Case] = []

    def mutated_sidecar(index: int) -> tuple[dict, str]:
        field, expected = fields[index % len(fields)]
        record = json.loads(json.dumps(sidecar))
        parent, _, key = field.rpartition(".")
        holder = record if not parent else record.setdefault(parent, {})
        if not isinstance(holder, dict):
            holder = record[parent] = {}
        key = rng.choice(sorted(holder) or ["torch"]) if key == "*" else key
        holder[key] = rng.choice(_wrong_for(expected))
        return record, field

    def result_tree(root: Path, record: dict) -> Path:
        folder = root / "results" / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN
        folder.mkdir(parents=True)
        shell.copyfile(GOLDEN, folder / "result.json")
        (folder / "result.provenance.json").write_text(json.dumps(record))
        return root

    for index in range(generated):
        record, field = mutated_sidecar(index)
        case_dir = work / f"metadata-{index}"
        case_dir.mkdir()
        command = ["compare", "collect", "verify", "manifest", "matrix"][index % 5]
        if command == "compare":
            current = case_dir / "current.json"
            shell.copyfile(GOLDEN, current)
            provenance_path(current).write_text(json.dumps(record))
            cases.append(Case(f"compare: sidecar {field} of the wrong type", ["compare", GOLDEN, current], BAD,
                              [current, provenance_path(current)], (), "provenance.json"))
        elif command == "collect":
            tree = result_tree(case_dir / "machine", record)
            cases.append(Case(f"collect: sidecar {field} of the wrong type", ["collect", tree, "--into",
                              case_dir / "into"], BAD, [], (), "provenance.json"))
        elif command == "verify":
            golden = case_dir / "goldens" / GOLDEN.name
            golden.parent.mkdir()
            shell.copyfile(GOLDEN, golden)
            provenance_path(golden).write_text(json.dumps(record))
            cases.append(Case(f"verify: sidecar {field} of the wrong type", ["verify", golden.parent],
                              BAD, [golden, provenance_path(golden)], (), "not one record"))
        else:  # a collection whose manifest entry has a field of the wrong type
            into = case_dir / "into"
            folder = into / TINY_SUITE / "cpu" / DEFAULT_TOOLCHAIN / "x86_64-amd-avx2-mkl"
            folder.mkdir(parents=True)
            shell.copyfile(GOLDEN, folder / "result.json")
            provenance_path(folder / "result.json").write_text(json.dumps(sidecar))
            entry = {"sha256": "0" * 64, "origin": "somewhere"}
            entry[rng.choice(["sha256", "origin"])] = rng.choice(_wrong_for(str))
            (into / "collected.json").write_text(json.dumps({"key": entry}))
            if command == "manifest":
                cases.append(Case("collect: into a collection whose manifest entry has a field of the wrong type",
                                  ["collect", result_tree(case_dir / "machine", sidecar), "--into", into], BAD,
                                  [into / "collected.json"], (), "collected.json"))
            else:
                cases.append(Case(f"matrix: a collection whose sidecar {field} is of the wrong type",
                                  ["matrix", "--source", into, "--suite", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                                   "--out", case_dir / "out"], BAD, [], (), "provenance.json"))
                provenance_path(folder / "result.json").write_text(json.dumps(record))
    for name, text in (("a list", "[1, 2]"), ("a number", "3"), ("not JSON", "{"), ("empty", "")):
        current = work / f"current-{name.replace(' ', '-')}.json"
        shell.copyfile(GOLDEN, current)
        provenance_path(current).write_text(text)
        cases.append(Case(f"compare: a sidecar that is {name}", ["compare", GOLDEN, current], BAD,
                          [current], (), "provenance"))
    return cases
