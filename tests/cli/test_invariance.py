"""`logitsmatch invariance`: one suite's results at several layouts, judged pair by pair like the matrix.

The results here are a committed golden and edited copies of it, published the way `logitsmatch run
--layout L` publishes them (result + provenance under results/<suite>/<platform label>/<toolchain>/);
the real layouts run in tests/inference/test_family.py and docs/invariance/.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logitsmatch.cli import main as cli_main
from logitsmatch.judge.compare import compare
from logitsmatch.judge.golden_io import load_golden
from logitsmatch.judge.policy import INVARIANCE_ABS_TOL, Policy
from logitsmatch.suites import load_suite
from support import DEFAULT_TOOLCHAIN, TINY_SUITE, golden_file
from support.published_results import publish, shifted


@pytest.fixture
def published(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    monkeypatch.setenv("LOGITSMATCH_RESULTS", str(tmp_path / "results"))
    suite = load_suite(project, TINY_SUITE)
    golden = json.loads(golden_file(TINY_SUITE).read_text())
    return suite, golden, tmp_path


def test_table_is_compare_pair_by_pair_at_the_stated_tolerance(published, project, capsys):
    suite, golden, tmp_path = published
    files = {
        "tp8": publish(project, tmp_path / "results", suite, "tp8", golden),
        "tp1": publish(project, tmp_path / "results", suite, "tp1", shifted(golden, 5e-5)),
        "pp2": publish(project, tmp_path / "results", suite, "pp2", shifted(golden, 2e-4)),
    }
    assert files["tp8"].parent.parent.name == "cpu"  # the suite's own layout is its plain result
    out = tmp_path / "out"
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp8,tp1,pp2",
                     "--no-run", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and "NOT INVARIANT" in printed
    report = json.loads((out / "invariance.json").read_text())
    assert report["policy"]["abs_tol"] == INVARIANCE_ABS_TOL
    assert report["policy"]["metrics"] == ["generated_tokens", "logprobs"]
    assert f"abs {INVARIANCE_ABS_TOL:g} is used here" in report["tolerance_why"]
    policy = Policy(abs_tol=INVARIANCE_ABS_TOL, metrics=["generated_tokens", "logprobs"])
    for row, row_file in files.items():
        for col, col_file in files.items():
            expected = compare(load_golden(row_file), load_golden(col_file), policy)
            cell = report["table"]["cells"][row][col]
            assert (cell["passed"], cell["max_abs_delta"], cell["n_over_tolerance"]) == (
                expected.passed, expected.max_abs_delta, expected.n_over_tolerance)
    assert report["table"]["cells"]["tp8"]["tp1"]["passed"] and not report["table"]["cells"]["tp8"]["pp2"]["passed"]
    assert report["runs"]["tp1"] == {"ranks": 1, "engines_served": 1, "wall_s": 12.5, "peak_rss_mib_max": 400.0,
                                     "date": None, "cpu": "test CPU (ISA unknown)"}
    markdown = (out / "invariance.md").read_text()
    assert "Tolerance: fp32 on one toolchain and one CPU" in markdown and "| **tp8** |" in markdown
    assert f"`logitsmatch invariance {TINY_SUITE} --toolchain {DEFAULT_TOOLCHAIN} --layouts tp8,tp1,pp2`" in markdown
    if "matplotlib" in sys.modules or _has_matplotlib():
        assert (out / "invariance.png").stat().st_size > 10_000


def test_all_within_tolerance_is_invariant(published, project, capsys):
    suite, golden, tmp_path = published
    publish(project, tmp_path / "results", suite, "tp8", golden)
    publish(project, tmp_path / "results", suite, "tp2", shifted(golden, -3e-6))
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp8,tp2", "--no-run",
                     "--out", str(tmp_path / "out")])
    assert code == 0
    compared = sum(len(r["logprobs"]) for r in golden.values() if isinstance(r, dict))
    assert (f"INVARIANT: 2 layouts, every pair within tolerance: tokens equal, max |delta logprob| 3e-06 <= 0.0001; "
            f"at most 1 of {compared} logprobs moved in a pair") in capsys.readouterr().out


def test_the_tolerance_texts_name_the_tolerance_used(published, project):
    """--abs-tol reaches the Markdown's and JSON's explanations, not only the table."""
    suite, golden, tmp_path = published
    publish(project, tmp_path / "results", suite, "tp8", golden)
    publish(project, tmp_path / "results", suite, "tp2", shifted(golden, -3e-6))
    out = tmp_path / "out"
    cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp8,tp2", "--schedules",
              "together", "--abs-tol", "1e-5", "--no-run", "--out", str(out)])
    report, markdown = json.loads((out / "invariance.json").read_text()), (out / "invariance.md").read_text()
    assert "abs 1e-05 is used here" in report["tolerance_why"] and "abs 1e-05 is used here" in markdown
    assert "The same abs 1e-05 holds for schedules" in markdown
    assert f"abs {INVARIANCE_ABS_TOL:g} is used" not in markdown


def test_a_stale_or_missing_layout_is_named_not_taken(published, project, capsys):
    suite, golden, tmp_path = published
    result = publish(project, tmp_path / "results", suite, "tp8", golden)
    sidecar = result.with_name("result.provenance.json")  # a result another toolchain produced
    sidecar.write_text(sidecar.read_text().replace(DEFAULT_TOOLCHAIN, "py3.11-torch2.13.0-mcore0.15.3"))
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp8,tp1", "--no-run",
                     "--out", str(tmp_path / "out")])
    assert code == 3
    err = capsys.readouterr().out
    assert "layout tp8: no fresh result (its provenance names toolchain py3.11-torch2.13.0-mcore0.15.3" in err
    assert "layout tp1: no fresh result (there is no result)" in err


def test_what_has_no_fresh_result_runs_in_this_venv_and_only_that(published, project, capsys, monkeypatch):
    """run.freshness.ensure_fresh (nox's matrix and record call it too): a stale layout runs, a fresh one is reused."""
    from logitsmatch.run import freshness

    suite, golden, tmp_path = published
    publish(project, tmp_path / "results", suite, "tp8", golden)
    ran = []

    def run(command, env):
        ran.append(command)
        layout = command[command.index("--layout") + 1]
        publish(project, tmp_path / "results", suite, layout, golden)  # what the run would publish
        return subprocess.CompletedProcess(command, 0 if layout == "tp2" else 3)

    monkeypatch.setattr(freshness.subprocess, "run", run)
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp8,tp2",
                     "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    assert ran == [[sys.executable, "-m", "logitsmatch", "run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN,
                    "--platform", "cpu", "--layout", "tp2", "--no-compare"]]
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", "tp2,tp1",
                     "--out", str(tmp_path / "out"), "--timeout", "60"])
    assert code == 3 and ran[-1][-3:] == ["--timeout", "60.0", "--no-compare"]
    assert "layout tp1: logitsmatch run exited 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "layouts, message",
    [
        ("tp8", "at least two layouts"),
        ("tp8,tp8", "listed twice"),
        ("tp8,pp8", "2 layers do not split evenly over 8 pipeline stages"),
        ("tp8,qq2", "is not understood"),
    ],
)
def test_bad_layouts_are_refused_before_anything_runs(published, layouts, message, capsys):
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--layouts", layouts])
    assert code == 2 and message in capsys.readouterr().err


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_default_layouts_are_those_the_suite_can_take_and_the_others_are_named(published, project, capsys):
    """The tiny sibling's 2 layers cannot make 8 pipeline stages: the default leaves PP8 out and says why."""
    from logitsmatch.run.plan import DENSE_LAYOUTS, default_invariance_layouts

    suite, golden, tmp_path = published
    chosen, left_out = default_invariance_layouts(suite, project)
    assert "pp8" in DENSE_LAYOUTS.split(",") and "pp8" not in chosen.split(",")
    assert left_out == {"pp8": "2 layers do not split evenly over 8 pipeline stages"}
    assert set(chosen.split(",")) == set(DENSE_LAYOUTS.split(",")) - {"pp8"}
    for layout in chosen.split(","):
        publish(project, tmp_path / "results", suite, layout, golden)
    code = cli_main(["invariance", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN, "--no-run",
                     "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0 and "layout pp8 left out: 2 layers do not split evenly over 8 pipeline stages" in out
    assert f"INVARIANT: {len(chosen.split(','))} layouts" in out
    assert "Left out of the default layouts: pp8 (2 layers" in (tmp_path / "o" / "invariance.md").read_text()
