"""The drift matrix agrees with `compare` pair by pair, and draws its heatmap."""

from __future__ import annotations

import json
import math
import struct

from logitsmatch.cli import main as cli_main
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import json_float, load_golden
from logitsmatch.judge.matrix import Cell
from logitsmatch.judge.policy import Policy
from logitsmatch.paths import golden_path
from logitsmatch.suites import load_suite
from logitsmatch.toolchains import load_toolchains
from support import TINY_SUITE, main_job_zmq_cases

MOE_TINY = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def test_matrix_matches_compare_pair_by_pair(project, tmp_path, monkeypatch, capsys):
    """The tiny MoE sibling's cells differ (36 values from 0.18.0 on, the routing check across 0.17): each is
    compare's verdict for its pair."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    shipped = load_toolchains(project / "pyproject.toml")
    cpu_toolchains = [name for name, t in shipped.items() if not t.requires_gpu]
    toolchains = [name for name in cpu_toolchains if golden_path(MOE_TINY, "cpu", name).exists()]
    assert len(toolchains) >= 3
    out = tmp_path / "matrix"
    code = cli_main(["matrix", "--suite", MOE_TINY, "--source", "goldens", "--out", str(out)])
    assert code in (0, 1)
    report = json.loads((out / "matrix.json").read_text())["suites"][MOE_TINY]
    assert set(report["toolchains"]) == set(toolchains)
    assert set(report["missing"]) == set(shipped) - set(toolchains)
    suite = load_suite(project, MOE_TINY)
    policy = suite.policy
    for row in toolchains:
        for col in toolchains:
            expected = compare(
                load_golden(golden_path(MOE_TINY, "cpu", row)),
                load_golden(golden_path(MOE_TINY, "cpu", col)),
                policy,
            )
            cell = report["cells"][row][col]
            assert cell["tokens_agree"] == expected.tokens_agree
            assert cell["max_abs_delta"] == float(expected.max_abs_delta)
            assert cell["n_over_tolerance"] == expected.n_over_tolerance
            if row == col:
                assert cell["max_abs_delta"] == 0 and cell["passed"]
            assert cell["n_moved"] == expected.n_moved and cell["max_ulps"] == expected.max_ulps
    assert (out / "matrix.png").stat().st_size > 10_000
    assert "| **" in (out / "matrix.md").read_text()
    grid = capsys.readouterr().out.splitlines()
    header = grid.index(MOE_TINY) + 1
    assert grid[header].split() == [str(i) for i in range(1, len(toolchains) + 1)]
    assert grid[-1].startswith(f"1 suite × {len(toolchains)} toolchains: ")


OLD, NEW = "py3.11-torch2.13.0-mcore0.16.1", "py3.12-torch2.14.1-mcore0.19.2"


def test_closing_summary_names_the_suite_that_differs_and_how(project, tmp_path, monkeypatch, capsys):
    """The tiny MoE sibling moves by one float32 ulp in 36 logprobs from megatron-core 0.18.0 on; the seed's
    tiny sibling is bitwise the same (the committed goldens of both toolchains)."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    for suite in (MOE_TINY, TINY_SUITE):
        for toolchain in (OLD, NEW):
            assert golden_path(suite, "cpu", toolchain).is_file()
    options = ["--toolchain", NEW, "--toolchain", OLD, "--suite", MOE_TINY, "--suite", TINY_SUITE]
    assert cli_main(["matrix", *options, "--source", "goldens", "--out", str(tmp_path), "-q"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert cli_main(["matrix", *options, "--source", "goldens", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert quiet == out[-1:]  # -q: the summary line alone
    assert out[-1] == ("2 suites × 2 toolchains: 1 suite identical, 1 differs: tp4_etp1_pp1_ep8_tiny "
                       "mcore0.16.1↔mcore0.19.2, 36 values, max 4.8e-7 (1 ulp), none over tolerance, "
                       "another check fails in 1 ordered pair")  # 0.16.1 records no routing, 0.19.2's golden has it
    moe = out.index(MOE_TINY)
    assert out[moe + 2].split() == ["1", OLD, "*", "=", "~36"]  # sorted by version, whatever the order given
    assert out[moe + 3].split() == ["2", NEW, "~36", "fails", "="]  # the routing check fails: the cell says so
    markdown = (tmp_path / "matrix.md").read_text()
    assert "36 of 158 moved (max 4.8e-7, 1 ulp), 0 over" in markdown and "= bitwise identical" in markdown
    assert f"Made by: `logitsmatch matrix --toolchain {NEW} --toolchain {OLD} --suite {MOE_TINY}" in markdown


def test_toolchains_sort_by_release_not_by_text():
    from logitsmatch.flows.matrix import by_version
    from logitsmatch.toolchains import Toolchain

    names = {"0.9.0": "2.13.0", "0.10.0": "2.9.1", "0.10.0 ": "2.13.0"}
    chains = [Toolchain(name=f"t{i}", python="3.11", torch=torch, megatron_core=mcore.strip())
              for i, (mcore, torch) in enumerate(names.items())]
    ordered = sorted(chains, key=by_version)
    expected = [("0.9.0", "2.13.0"), ("0.10.0", "2.9.1"), ("0.10.0", "2.13.0")]
    assert [(c.megatron_core, c.torch) for c in ordered] == expected


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


def test_the_png_wraps_panels_into_a_grid_readable_at_full_size(project, tmp_path, monkeypatch):
    """The ten ZMQ suites over three toolchains: a grid of panels no wider than a screen (it was 7800 px in one
    row), and no taller than two (the family's suites add rows of the same width)."""
    from PIL import Image

    from logitsmatch.suites import suite_names

    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    zmq = main_job_zmq_cases(suite_names(project))
    cli_main(["matrix", "--toolchain", OLD, "--toolchain", NEW, "--source", "goldens", "--out", str(tmp_path), "-q",
              *[word for name in zmq for word in ("--suite", name)]])
    width, height = Image.open(tmp_path / "matrix.png").size
    assert 800 <= width <= 1700 and height <= 2400


def test_a_table_without_outputs_is_a_panel_saying_so(tmp_path):
    from logitsmatch.render.matrix import render_heatmap

    empty = {"names": [], "missing": ["tp8", "pp8"], "cells": {}, "tolerance": 1e-4}
    render_heatmap({"suite": empty}, tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 5_000


def test_a_failing_pair_shows_that_it_fails_where_the_json_says_so(project, tmp_path, monkeypatch, capsys):
    """The tiny MoE goldens: pairs whose routing check fails move logprobs within tolerance only; their cells
    must still read as failing in the terminal and the Markdown, as the JSON's `passed: false` says."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    out = tmp_path / "matrix"
    assert cli_main(["matrix", "--suite", MOE_TINY, "--source", "goldens", "--out", str(out)]) in (0, 1)
    report = json.loads((out / "matrix.json").read_text())["suites"][MOE_TINY]
    names = report["toolchains"]
    failing = [(row, col) for row in names for col in names if not report["cells"][row][col]["passed"]]
    assert failing, "the committed MoE goldens hold pairs that fail a check"
    grid = capsys.readouterr().out.splitlines()
    first = grid.index(MOE_TINY) + 2
    for index, row in enumerate(names):
        cells = grid[first + index].split(row, 1)[1].replace("*", "").split()
        joined = " ".join(cells)
        shown_failing = joined.count("fails") + sum(1 for cell in cells if cell.startswith(("!", "@")))
        assert shown_failing == sum(1 for r, _ in failing if r == row), (row, joined)
    markdown = (out / "matrix.md").read_text()
    assert markdown.count(", fails") >= len(failing)


def test_nothing_to_tabulate_points_at_the_platforms_that_have_goldens(project, monkeypatch, capsys):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    assert cli_main(["matrix", "--source", "goldens", "--platform", "gpu", "--suite", TINY_SUITE]) == 2
    err = capsys.readouterr().err.strip()
    assert "try --source goldens" not in err  # it was given
    assert err.endswith("(run them first; these suites have goldens on platform cpu)")


PP_TINY = "gpt_dynamic_inference_tp1_pp8_dp1_tiny_logitsmatch_zmq"


def test_no_output_is_one_short_line_saying_why(project, tmp_path, monkeypatch, capsys):
    """The PP8 tiny sibling has no golden for the four 0.15.x toolchains (0.15 cannot run PP through the
    coordinator) nor for the GPU toolchain on cpu: one line of reasons, not the toolchains' full names."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    shipped = load_toolchains(project / "pyproject.toml")
    releases_15 = [name for name, t in shipped.items() if t.megatron_core.startswith("0.15.")]
    gpu = [name for name, t in shipped.items() if t.requires_gpu]
    assert len(releases_15) == 4 and len(gpu) == 1
    assert cli_main(["matrix", "--suite", PP_TINY, "--suite", MOE_TINY, "--source", "goldens",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = "no output for 5 toolchains: 0.15.x cannot run PP8 through the coordinator (4), GPU toolchain (1)"
    assert line in out and not any(name in out for name in releases_15 + gpu)
    assert ("no output for 5 toolchains: 0.15.x cannot run EP8 across engines through the coordinator (4), "
            "GPU toolchain (1)") in out
    report = json.loads((tmp_path / "matrix.json").read_text())["suites"][PP_TINY]
    assert report["missing_reasons"] == {**{name: "0.15.x cannot run PP8 through the coordinator"
                                            for name in releases_15}, **{name: "GPU toolchain" for name in gpu}}
    assert line in (tmp_path / "matrix.md").read_text()  # in the row of the collapsed table


def test_a_table_whose_cells_are_all_equal_collapses_into_the_summary(project, tmp_path, monkeypatch, capsys):
    """The tiny PP8 sibling is bitwise the same under every toolchain that ran it: no grid in the terminal or
    the Markdown, no grey panel in the PNG, one line naming it; the MoE sibling, which moved, keeps its grid."""
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    assert cli_main(["matrix", "--suite", PP_TINY, "--suite", MOE_TINY, "--source", "goldens",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert PP_TINY not in out and MOE_TINY in out  # a heading per drawn grid
    block = out.index("identical throughout (every cell =, no grid drawn): 1 of 2")
    assert out[block + 1].split()[:5] == ["tp1_pp8_dp1_tiny", "8", "toolchains,", "all", "=;"]
    assert out[-1].startswith("2 suites × 8 toolchains: 1 suite identical, 1 differs: tp4_etp1_pp1_ep8_tiny")
    markdown = (tmp_path / "matrix.md").read_text()
    assert f"## {MOE_TINY}" in markdown and f"## {PP_TINY}" not in markdown
    assert f"| {PP_TINY} | 8 toolchains, all =; no output for 5 toolchains:" in markdown
    from logitsmatch.judge.matrix import drift_matrix
    from logitsmatch.render.matrix import render_heatmap

    tables = {name: drift_matrix(load_suite(project, name), "cpu", list(load_toolchains(project / "pyproject.toml")),
                                 "goldens", load_suite(project, name).policy) for name in (PP_TINY, MOE_TINY)}
    sizes = {}
    for collapse in (False, True):
        path = tmp_path / f"collapse-{collapse}.png"
        render_heatmap(tables, path, collapse=collapse)
        width, height = struct.unpack(">II", path.read_bytes()[16:24])
        sizes[collapse] = width * height
    assert sizes[True] < 0.7 * sizes[False]  # one panel, not two
