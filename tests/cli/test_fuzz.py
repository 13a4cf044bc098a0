"""Bad input through the real CLI: one stderr line, a documented exit code, never a traceback.

Each case runs ``python -m logitsmatch ...`` as a user would (the bad inputs of ``run``, which need a
toolchain venv, are in tests/inference/test_bad_run_inputs.py). A short hypothesis
run of the fuzz campaign (scripts/fuzz_campaign.py, which does >= 1,000
inputs) checks the same promise over generated files, and the hostile cases
(tests/support/fuzz.py: hostile_cases) replay every subcommand's file inputs
as separate processes: special files, huge and deep inputs, duplicate keys,
surrogates, binary YAML, path-like names (LOGITSMATCH_FUZZ_SEED replays one).
"""

from __future__ import annotations

import io
import json
import math
import tokenize

import pytest

from support import (
    DEFAULT_TOOLCHAIN,
    PROJECT,
    TINY_SUITE,
    assert_one_line,
    golden_file,
    goldens_digest,
    run_logitsmatch,
)
from support import fuzz as campaign

GOLDEN = golden_file(TINY_SUITE)


# --- compare ----------------------------------------------------------------------------------


def golden_with(mutate) -> str:
    doc = json.loads(GOLDEN.read_text())
    mutate(doc)
    return json.dumps(doc)


COMPARE_BAD = {
    "malformed": ('{"0": {"generated_tokens": [1, 2], "logprobs": [0.1, NaN', "malformed JSON"),
    "truncated": (GOLDEN.read_text()[:700], "malformed JSON"),
    "empty": ("", "empty file"),
    "top-level list": ("[1, 2, 3]", "top level is a list"),
    "no requests": ('{"throughput": [1.0, 2.0]}', "no requests"),
    "tokens wrong type": (golden_with(lambda d: d["0"].update(generated_tokens="abc")), "generated_tokens is a string"),
    "token is a float": (golden_with(lambda d: d["1"].update(generated_tokens=[1.5])), "expected an integer"),
    "token is NaN": (golden_with(lambda d: d["1"].update(generated_tokens=[math.nan])), "expected an integer"),
    "logprob is text": (golden_with(lambda d: d["2"]["logprobs"].__setitem__(0, "x")), "logprobs[0] is a string"),
    "request is a number": (golden_with(lambda d: d.update({"3": 7})), "request '3' is a number"),
    "not UTF-8": (b"\xff\xfe{}".decode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(COMPARE_BAD))
def test_compare_bad_file_exits_2(case, tmp_path):
    text, fragment = COMPARE_BAD[case]
    current = tmp_path / "current.json"
    current.write_bytes(text.encode("latin-1") if case == "not UTF-8" else text.encode())
    assert_one_line(run_logitsmatch("compare", str(GOLDEN), str(current)), 2, fragment)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["0"]["logprobs"].__setitem__(3, math.inf), "max |delta| inf"),
        (lambda d: d["0"]["logprobs"].__setitem__(3, math.nan), "FAIL"),
        (lambda d: d["0"].pop("logprobs"), "structural"),
    ],
    ids=["inf logprob", "NaN logprob", "missing logprobs"],
)
def test_compare_non_finite_and_missing_values_are_drift_not_errors(mutate, fragment, tmp_path):
    current = tmp_path / "current.json"
    current.write_text(golden_with(mutate))
    completed = run_logitsmatch("compare", str(GOLDEN), str(current))
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert fragment in completed.stdout


@pytest.mark.parametrize(
    "option, fragment",
    [
        ("--abs-tol=nan", "finite"),
        ("--abs-tol=inf", "finite"),
        ("--rel-tol=-1", ">= 0"),
        ("--mode=bogus", "unknown comparison mode"),
        ("--failure-budget=x", "integer"),
        ("--metrics=nope", "unknown metric"),
    ],
)
def test_compare_bad_option_values_exit_2(option, fragment):
    assert_one_line(run_logitsmatch("compare", str(GOLDEN), str(GOLDEN), option), 2, fragment)


# --- generated input (the campaign, small) -------------------------------------------------------


def test_generated_compare_inputs_never_escape_the_cli(tmp_path):
    tally = campaign.fuzz_compare(150, tmp_path, seed=1)
    assert tally.inputs == 150
    assert not tally.tracebacks and not tally.multiline and not tally.undocumented, (
        tally.tracebacks + tally.multiline + tally.undocumented
    )[:3]


def test_generated_suite_folders_never_escape_the_cli(tmp_path):
    before = goldens_digest()
    tally = campaign.fuzz_suites(150, tmp_path, seed=1, toolchain=DEFAULT_TOOLCHAIN)
    assert tally.inputs == 150
    assert not tally.tracebacks and not tally.multiline and not tally.undocumented, (
        tally.tracebacks + tally.multiline + tally.undocumented
    )[:3]
    assert goldens_digest() == before


ISSUE_CASES = [  # every hostile input issue 17 found, by the case that replays it
    "compare: golden is a FIFO", "compare: golden is a /dev/zero link", "make-vocab: --corpus is a FIFO",
    "compare: a lone surrogate in generated_text, every report",
    "matrix: a fresh checkout (--source results, nothing there)",
    "matrix: without matplotlib", "matrix: --out at an existing file", "localize: a bad rank file name",
    "localize: a list record", "localize: a record without name", "localize: a garbage .npz",
    "localize: --markdown into a missing folder", "make-vocab: --output is a folder",
    "run: logitsmatch.yaml with binary",
    "compare: --metrics ,", "compare: routing_indices holding strings", "compare: an expert id of 1.5",
    "compare: a logprob true", "compare: --json GOLDEN (the report over an input)",
    "compare: reports with the umask's mode", "record: --platform mars",
    "localize: unaligned captures (one-sided module, shape and dtype mismatch), every report",
]


def test_hostile_inputs_to_every_subcommand_end_in_the_exit_code_contract(tmp_path):
    """Each case its own process, 10 s at most: no traceback, no hang, a contract code (never 70, never 1 for a bad
    input), inputs byte-identical, outputs with the umask's mode. LOGITSMATCH_FUZZ_SEED replays a run."""
    seed = campaign.fuzz_seed()
    cases = campaign.hostile_cases(tmp_path / "cases", seed, generated=30)
    names = [case.name for case in cases]
    assert set(ISSUE_CASES) <= set(names), sorted(set(ISSUE_CASES) - set(names))
    assert any(name.startswith("run: suite name '../") for name in names)
    assert {name.split(":")[0] for name in names} >= {"compare", "compare-toolchains", "record", "matrix", "localize",
                                                       "make-vocab", "run", "invariance", "explain", "determinism",
                                                       "collect"}
    outcomes = campaign.run_cases(cases, tmp_path / "cases", seed)
    failures = [f"{o.case.name}: {'; '.join(o.problems)} | {o.case.argv} | {o.stderr[-200:]!r}"
                for o in outcomes if o.problems]
    assert not failures, f"LOGITSMATCH_FUZZ_SEED={seed}: {len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def test_yaml_and_torch_loading_are_safe():
    """yaml.safe_load only, weights_only torch loads, no shell strings anywhere in the package."""
    def code(path):  # the source without comments
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        return " ".join(token.string for token in tokens if token.type != tokenize.COMMENT)

    package = PROJECT / "tools" / "logitsmatch"
    sources = {str(path.relative_to(package)): code(path) for path in package.rglob("*.py")}
    assert len(sources) > 30 and "rank/checkpoint.py" in sources
    for name, text in sources.items():
        assert "yaml . load (" not in text and "unsafe_load" not in text and "yaml . Loader" not in text, name
        assert "shell = True" not in text and "os . system" not in text and "os . popen" not in text, name
        assert "weights_only = False" not in text, name
        assert "pickle . load" not in text and "eval (" not in text.replace(". eval (", ""), name
    # the one class torch's safe globals get: argparse.Namespace, for a checkpoint's stored args
    safe_globals = [text for text in sources.values() if "add_safe_globals" in text]
    assert safe_globals and all("add_safe_globals ( [ argparse . Namespace ] )" in text for text in safe_globals)


def test_metadata_fields_of_the_wrong_type_are_bad_input_everywhere(tmp_path):
    """Typed-schema fuzzing: a provenance sidecar field or a manifest entry of the wrong type, read by compare,
    collect, matrix and verify, is bad input (2) naming the file: never a crash (70), a hang or a traceback."""
    seed = campaign.fuzz_seed()
    cases = campaign.metadata_cases(tmp_path / "cases", seed, generated=15)  # 3 per command; the campaign draws 80
    assert len(cases) == 19
    outcomes = campaign.run_cases(cases, tmp_path / "cases", seed)
    failures = [f"{o.case.name}: {'; '.join(o.problems)} | {o.stderr[-200:]!r}" for o in outcomes if o.problems]
    assert not failures, f"LOGITSMATCH_FUZZ_SEED={seed}: {len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
