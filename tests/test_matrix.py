"""The drift matrix agrees with `compare` pair by pair, and draws its heatmap."""

from __future__ import annotations

import json
import math

from logitsmatch.cli import main as cli_main
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.judge.matrix import Cell
from logitsmatch.judge.policy import Policy
from logitsmatch.paths import golden_path
from logitsmatch.suites import load_suite
from logitsmatch.toolchains import load_toolchains
from support import TINY_SUITE


def test_matrix_matches_compare_pair_by_pair(project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    shipped = load_toolchains(project / "pyproject.toml")
    cpu_toolchains = [name for name, t in shipped.items() if not t.requires_gpu]
    toolchains = [name for name in cpu_toolchains if golden_path(TINY_SUITE, "cpu", name).exists()]
    assert len(toolchains) >= 3
    out = tmp_path / "matrix"
    code = cli_main(["matrix", "--suite", TINY_SUITE, "--source", "goldens", "--out", str(out)])
    assert code in (0, 1)
    report = json.loads((out / "matrix.json").read_text())["suites"][TINY_SUITE]
    assert set(report["toolchains"]) == set(toolchains)
    assert set(report["missing"]) == set(shipped) - set(toolchains)
    suite = load_suite(project, TINY_SUITE)
    policy = Policy.from_suite(suite.metrics, suite.comparison)
    for row in toolchains:
        for col in toolchains:
            expected = compare(load_golden(golden_path(TINY_SUITE, "cpu", row)), load_golden(golden_path(TINY_SUITE, "cpu", col)), policy)
            cell = report["cells"][row][col]
            assert cell["tokens_agree"] == expected.tokens_agree
            assert cell["max_abs_delta"] == float(expected.max_abs_delta)
            assert cell["n_over_tolerance"] == expected.n_over_tolerance
            if row == col:
                assert cell["max_abs_delta"] == 0 and cell["passed"]
    assert (out / "matrix.png").stat().st_size > 10_000
    assert "| **" in (out / "matrix.md").read_text()
    assert "->" in capsys.readouterr().out


def test_non_finite_deltas_are_spelled_as_in_the_compare_report():
    values = (1.5, 0.0, math.nan, math.inf, -math.inf, None)
    assert [json_float(v) for v in values] == [1.5, 0.0, "nan", "inf", "-inf", None]
    golden = {"0": {"generated_tokens": [1, 2], "logprobs": [-1.0, -0.5, -0.25]}}
    current = {"0": {"generated_tokens": [1, 2], "logprobs": [-1.0, math.inf, -0.25]}}
    result = compare(golden, current, Policy())
    cell = Cell(tokens_agree=True, first_divergence=None, max_abs_delta=result.max_abs_delta, n_over_tolerance=1,
                passed=False)
    assert cell.to_dict()["max_abs_delta"] == result.to_dict()["summary"]["logprobs"]["max_abs_delta"] == "inf"


def test_unknown_toolchain_is_bad_input(project, monkeypatch, capsys):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    assert cli_main(["matrix", "--toolchain", "py0"]) == 2
    assert "unknown toolchain 'py0'" in capsys.readouterr().err


def test_the_written_table_names_files_relative_to_the_project(project, tmp_path, monkeypatch):
    """A committed table (docs/matrix) must not carry this machine's paths."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    out = tmp_path / "matrix"
    cli_main(["matrix", "--suite", TINY_SUITE, "--source", "goldens", "--out", str(out), "-q"])
    files = json.loads((out / "matrix.json").read_text())["suites"][TINY_SUITE]["files"]
    assert files and all(path.startswith("golden_values/") for path in files.values())
