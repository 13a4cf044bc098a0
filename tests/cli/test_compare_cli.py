"""`logitsmatch compare`: exit codes, one-line errors, report files, golden_io and report rendering."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from logitsmatch import cli
from logitsmatch.errors import BadInput
from logitsmatch.judge import golden_io
from logitsmatch.judge.compare import compare
from logitsmatch.judge.figures import short_number
from logitsmatch.judge.golden_io import atomic_writer, load_golden, write_json_atomic
from logitsmatch.judge.policy import Policy
from logitsmatch.judge.report import render_junit, render_markdown, render_terminal
from support import main_job_zmq_cases

HISTORY = Path(__file__).resolve().parents[1] / "data" / "megatron_history"


def request(logprobs=(-1.5, -2.25, -0.5, -0.1, -0.2), tokens=(11, 12), text=" a b"):
    return {"input_prompt": "p q r", "generated_text": text, "generated_tokens": list(tokens),
            "latency": 0.5, "logprobs": list(logprobs)}


def write(tmp_path: Path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["compare", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


GOOD = {"0": request(), "1": request(tokens=(3, 4), text=" c d")}


def test_identical_files_pass_and_write_every_report(tmp_path, capsys):
    golden = write(tmp_path, "golden.json", GOOD)
    current = write(tmp_path, "current.json", GOOD)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, out, err = run(capsys, golden, current, "--json", str(out_dir / "r.json"),
                       "--markdown", str(out_dir / "r.md"), "--junit", str(out_dir / "r.xml"))
    assert (rc, err) == (0, "")
    assert out.startswith("PASS: 0 of 5 checks failed")
    assert sorted(p.name for p in out_dir.iterdir()) == ["r.json", "r.md", "r.xml"]  # no temp files left
    report = json.loads((out_dir / "r.json").read_text())
    assert report.pop("metrics_origin") == "the default metrics: no known suite recognised, name one with --suite"
    assert report == compare(load_golden(golden), load_golden(current), Policy()).to_dict()
    assert report["verdict"] == "pass" and report["requests"]["0"]["first_token_divergence"] is None
    assert (out_dir / "r.md").read_text().startswith("### logitsmatch compare: **PASS**")
    suite = ET.parse(out_dir / "r.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("5", "0")


def test_real_drift_exits_1_with_the_verdict_first(tmp_path, capsys):
    folder = HISTORY / "te2.7_fp8_logitsmatch"
    report_path = tmp_path / "report.json"
    rc, out, err = run(capsys, str(folder / "before.json"), str(folder / "after.json"), "--json", str(report_path))
    assert (rc, err) == (1, "")
    lines = out.splitlines()
    assert lines[0].startswith("FAIL: 2 of 3 checks failed; tokens diverge in 1 of 1 request;")
    assert "Largest logprob drifts (top 20 of 102):" in lines
    assert "  ... and 82 more" in lines
    expected = compare(load_golden(folder / "before.json"), load_golden(folder / "after.json"), Policy()).to_dict()
    report = json.loads(report_path.read_text())
    assert report.pop("metrics_origin").startswith("the default metrics") and report == expected
    assert expected["requests"]["0"]["first_token_divergence"] == 20


BAD_FILES = {
    "empty": (b"", "empty file"),
    "blank": (b" \n\t", "empty file"),
    "truncated": (json.dumps(GOOD)[:-7].encode(), "malformed JSON at line 1"),
    "not utf-8": (b'{"0": "\xff\xfe"}', "not UTF-8"),
    "top level list": (b"[1, 2]", "top level is a list"),
    "top level number": (b"3", "top level is a number"),
    "wrapped non-object": (json.dumps("[1, 2]").encode(), "top level is a list"),
    "no requests": (b"{}", "no requests"),
    "request is a list": (json.dumps({"0": [1, 2]}).encode(), "request '0' is a list, expected an object"),
    "logprobs not a list": (json.dumps({"0": dict(request(), logprobs="-1.0")}).encode(),
                            "request '0': logprobs is a string, expected a list of numbers"),
    "logprob null": (json.dumps({"0": dict(request(), logprobs=[-1.0, None, -2.0, -1.0, -1.0])}).encode(),
                     "logprobs[1] is null, expected a number"),
    "logprob text": (json.dumps({"0": dict(request(), logprobs=[-1.0, -2.0, "x", -1.0, -1.0])}).encode(),
                     "logprobs[2] is a string"),
    "logprobs all booleans": (json.dumps({"0": dict(request(), logprobs=[True] * 5)}).encode(),
                              "logprobs[0] is a boolean"),
    "huge integer logprob": (b'{"0": {"logprobs": [1' + b"0" * 400 + b']}}', "too large for a float"),
    "token beyond 64 bits": (json.dumps({"0": dict(request(), generated_tokens=[2**64, 1])}).encode(),
                             # the stdlib parser says "does not fit a 64-bit integer"; orjson
                             # reads 2**64 as a float, so the file is refused as a non-integer token
                             "generated_tokens[0] "),
    "token float": (json.dumps({"0": dict(request(), generated_tokens=[1.0, 2])}).encode(),
                    "generated_tokens[0] is a number, expected an integer"),
    "fewer logprobs than tokens": (json.dumps({"0": dict(request(), logprobs=[-1.0])}).encode(),
                                   "1 logprob for 2 generated tokens"),
    "text not a string": (json.dumps({"0": dict(request(), generated_text=5)}).encode(), "generated_text is a number"),
    "throughput not numbers": (json.dumps({"0": request(), "throughput": ["fast"]}).encode(),
                               "'throughput' is a list, expected a number or a list of numbers"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("side", ["golden", "current"])
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, name, side):
    content, fragment = BAD_FILES[name]
    good = write(tmp_path, "good.json", GOOD)
    bad = write(tmp_path, "bad.json", content)
    rc, out, err = run(capsys, *((bad, good) if side == "golden" else (good, bad)))
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"logitsmatch compare: error: {bad}: ") and fragment in err


def test_missing_file_and_directory_exit_2(tmp_path, capsys):
    good = write(tmp_path, "good.json", GOOD)
    rc, _, err = run(capsys, good, str(tmp_path / "nope.json"))
    assert rc == 2 and err.strip().endswith("nope.json: no such file")
    rc, _, err = run(capsys, str(tmp_path), good)
    assert rc == 2 and "is a directory" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("flags, fragment", [
    (["--mode", "fuzzy"], "unknown comparison mode 'fuzzy'"),
    (["--mode", "deterministic", "--abs-tol", "1e-3"], "bit-exact"),
    (["--abs-tol", "abc"], "abs_tol must be a number"),
    (["--abs-tol", "inf"], "finite"),
    (["--rel-tol=-1e-3"], ">= 0"),
    (["--failure-budget", "-1"], "failure_budget must be an integer >= 0"),
    (["--failure-budget", "two"], "failure_budget must be an integer"),
    (["--metrics", "generated_tokens,logits"], "unknown metric(s) logits"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags, fragment):
    golden = write(tmp_path, "golden.json", GOOD)
    rc, out, err = run(capsys, golden, golden, *flags)
    assert (rc, out) == (2, "")
    assert len(err.splitlines()) == 1 and fragment in err


def test_unwritable_report_path_exits_2(tmp_path, capsys):
    golden = write(tmp_path, "golden.json", GOOD)
    rc, _, err = run(capsys, golden, golden, "--json", str(tmp_path / "missing" / "r.json"))
    assert rc == 2 and "cannot write" in err and len(err.splitlines()) == 1


def test_nan_tokens_and_nan_policy_flags(tmp_path, capsys):
    nan_doc = {"0": request(logprobs=(-1.5, math.nan, -0.5, -math.inf, -0.2))}
    golden = write(tmp_path, "golden.json", json.dumps(nan_doc))  # stdlib writes NaN / -Infinity tokens
    assert math.isnan(load_golden(golden)["0"]["logprobs"][1])
    assert run(capsys, golden, golden)[0] == 0
    assert run(capsys, golden, golden, "--no-nan-equal")[0] == 1
    assert run(capsys, golden, golden, "--mode", "deterministic")[0] == 0


def test_modes_and_budget_from_flags(tmp_path, capsys):
    golden = write(tmp_path, "golden.json", GOOD)
    nudged = json.loads(json.dumps(GOOD))
    nudged["0"]["logprobs"][0] += 2e-5
    current = write(tmp_path, "current.json", nudged)
    assert run(capsys, golden, current)[0] == 0
    assert run(capsys, golden, current, "--mode", "deterministic")[0] == 1
    assert run(capsys, golden, current, "--mode", "approximate", "--failure-budget", "0")[0] == 1
    assert run(capsys, golden, current, "--mode", "approximate", "--abs-tol", "1e-4", "--failure-budget", "0")[0] == 0
    assert run(capsys, golden, current, "--mode", "approximate")[0] == 0  # auto budget: 1 of 5 allowed


def test_json_wrapped_in_strings_is_accepted(tmp_path, capsys):
    whole = write(tmp_path, "whole.json", json.dumps(json.dumps(GOOD)))
    per_request = write(tmp_path, "per_request.json", {"0": json.dumps(GOOD["0"]), "1": GOOD["1"]})
    plain = write(tmp_path, "plain.json", GOOD)
    assert load_golden(whole) == load_golden(plain) == load_golden(per_request)
    assert run(capsys, whole, per_request)[0] == 0


def test_stdlib_parser_gives_the_same_document(tmp_path, monkeypatch):
    path = write(tmp_path, "g.json", GOOD)
    with_default = load_golden(path)
    monkeypatch.setattr(golden_io, "orjson", None)
    assert load_golden(path) == with_default == GOOD


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"a": [1.0, math.nan]})
    assert target.read_text().startswith("{")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half a fi")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text().replace("NaN", "null")) == {"a": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(BadInput, match="cannot write"):
        write_json_atomic(tmp_path / "no" / "such" / "dir.json", {})


def many_drifts(n: int):
    golden = {"0": {"generated_tokens": [], "logprobs": [-1.0] * n}}
    current = {"0": {"generated_tokens": [], "logprobs": [-1.0 - (i + 1) * 1e-2 for i in range(n)]}}
    return compare(golden, current, Policy())


def test_terminal_and_markdown_truncate_largest_first():
    result = many_drifts(100)
    terminal = render_terminal(result).splitlines()
    header = terminal.index("Largest logprob drifts (top 20 of 100):")
    assert terminal[header + 2].split()[:2] == ["root['0']['logprobs'][99]", "prompt"]  # largest |delta| first
    assert terminal[header + 22] == "  ... and 80 more"
    markdown = render_markdown(result)
    assert "#### Largest logprob drifts (top 20 of 100)" in markdown and "... and 80 more" in markdown
    assert markdown.count("| root['0']['logprobs'][9") >= 10  # indices 99..80 in the table
    assert len(result.to_dict()["requests"]["0"]["logprob_changes"]) == 100


def test_junit_has_one_testcase_per_request_and_metric():
    golden = {"0": request(), "1": dict(request(), generated_text=" x")}
    current = {"0": request(tokens=(11, 99)), "1": dict(request(), generated_text=" y")}
    result = compare(golden, current, Policy(metrics=["generated_tokens", "logprobs", "generated_text"]))
    suite = ET.fromstring(render_junit(result)).find("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert len(cases) == 7 and suite.get("failures") == "3"
    assert cases[("request.0", "generated_tokens")].find("failure").get("message").startswith("tokens differ")
    assert cases[("request.1", "generated_text")].find("failure") is not None
    assert cases[("request.1", "logprobs")].find("failure") is None
    assert cases[("run", "request_ids")].find("failure") is None


MOE_TINY = HISTORY.parents[2] / "golden_values" / "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def test_the_verdict_line_counts_what_moved_bitwise(capsys):
    """megatron-core 0.17.1 -> 0.18.0 moves 36 of the tiny MoE sibling's 158 logprobs by one float32 ulp: a PASS
    that says so, and under deterministic mode every moved value at full precision with its ulps."""
    golden, current = (MOE_TINY / f"golden_values_cpu_py3.12-torch2.14.1-mcore{v}.json" for v in ("0.17.1", "0.18.0"))
    assert golden.is_file() and current.is_file()
    rc, out, _ = run(capsys, str(golden), str(current))
    assert rc == 0
    assert out.startswith("PASS: 0 of 4 checks failed; "  # the suite's METRICS: routing_indices too
                          "36 of 158 logprobs moved (max 4.8e-7, 1 ulp), none over tolerance")
    rc, out, _ = run(capsys, str(golden), str(current), "--mode", "deterministic")
    assert rc == 1 and "36 of 158 logprobs moved (max 4.8e-7, 1 ulp), 36 over tolerance" in out
    rows = out[out.index("ulps (float32)"):].splitlines()[1:21]  # the 20 largest
    assert rows[-1].split()[-1] == "1" and "... and 16 more" in out
    golden_values = load_golden(golden)["0"]["logprobs"]
    for row in rows:
        path, part, old, new, delta, ulps = row.split()
        index = int(path.rsplit("[", 1)[1].rstrip("]"))
        assert float(old) == golden_values[index] and repr(float(old)) == old  # shortest text, round-trips
        assert short_number(abs(float(new) - float(old))) == delta.lstrip("+-") and ulps == "1"  # a delta: 2 digits


def test_a_pass_that_moved_logprobs_names_them(capsys, tmp_path):
    """Megatron's verdict passes 0.17.1 -> 0.18.0 of the tiny MoE sibling, yet 36 logprobs moved: the terminal names
    the largest few and counts the rest, the JSON lists every one, and the DeepDiff view is not empty."""
    golden, current = (MOE_TINY / f"golden_values_cpu_py3.12-torch2.14.1-mcore{v}.json" for v in ("0.17.1", "0.18.0"))
    report, deepdiff = tmp_path / "report.json", tmp_path / "deepdiff.json"
    rc, out, _ = run(capsys, str(golden), str(current), "--json", str(report), "--deepdiff", str(deepdiff))
    assert rc == 0 and out.startswith("PASS")
    lines = out.splitlines()
    title = lines.index("Largest logprob moves within tolerance (top 5 of 36):")
    rows = lines[title + 2: title + 7]
    assert all(row.split()[-1] == "1" and row.split()[-2].lstrip("+-") == "4.8e-7" for row in rows)
    assert lines[title + 7] == "  ... and 31 more"
    g_values, c_values = (load_golden(path)["0"]["logprobs"] for path in (golden, current))
    moved = [i for i, (g, c) in enumerate(zip(g_values, c_values)) if g != c]
    changes = json.loads(report.read_text())["requests"]["0"]["logprob_changes"]
    assert [change["index"] for change in changes] == moved and len(moved) == 36
    prompt = len(g_values) - len(load_golden(golden)["0"]["generated_tokens"])
    for change in changes:
        i = change["index"]
        assert change == {"path": f"root['0']['logprobs'][{i}]", "request": "0", "index": i,
                          "part": "prompt" if i < prompt else "generated", "golden": g_values[i],
                          "current": c_values[i], "delta": c_values[i] - g_values[i], "ulps": 1,
                          "over_tolerance": False}
    within = json.loads(deepdiff.read_text())["logitsmatch_moved_within_tolerance"]
    assert list(within) == [change["path"] for change in changes]


def test_nothing_moved_says_so(capsys, tmp_path):
    path = write(tmp_path, "golden.json", GOOD)
    rc, out, _ = run(capsys, path, path)
    assert rc == 0 and "0 of 10 logprobs moved, none over tolerance" in out.splitlines()[0]


def test_ulps_count_in_float32_when_both_sides_are_float32_values():
    import numpy as np

    from logitsmatch.judge.ulps import moved, ulp_distance, ulp_width

    one = np.float32(-7.9210615)
    golden = np.array([float(one), 1.0, -0.0, np.nan, float(np.float32(1e-40))])
    current = np.array([float(np.nextafter(one, np.float32(0))), float(np.nextafter(np.float32(1), np.float32(0)) ),
                        0.0, np.nan, float(-np.float32(1e-40))])
    assert ulp_width(golden, current) == "float32"
    assert ulp_distance(golden, current, "float32").tolist() == [1, 1, 0, 0, 2 * int(np.float32(1e-40).view(np.int32))]
    assert moved(golden, current).tolist() == [True, True, True, False, True]
    assert ulp_width(np.array([0.1]), np.array([0.1])) == "float64"
    assert ulp_distance(np.array([1.0]), np.array([np.nextafter(1.0, 2.0)]), "float64").tolist() == [1]


def test_one_precision_per_kind_of_figure_and_counts_in_the_singular(capsys, tmp_path):
    """Every delta and statistic of deltas of one report reads as 4.8e-7 (never 4.76837158203125e-07 or 4.77e-07
    beside it); logprobs stay exact; a count of one is singular."""
    golden, current = (MOE_TINY / f"golden_values_cpu_py3.12-torch2.14.1-mcore{v}.json" for v in ("0.17.1", "0.18.0"))
    markdown = tmp_path / "report.md"
    rc, out, _ = run(capsys, str(golden), str(current), "--markdown", str(markdown))
    for text in (out, markdown.read_text()):
        assert "4.8e-7" in text and "4.76837158203125e-07" not in text and "4.77e-07" not in text
    row = next(line.split() for line in out.splitlines() if line.startswith("  0 "))
    assert row[-4:] == ["4.8e-7", "1", "1.1e-7", "4.8e-7"]  # max |delta|, max ulps, mean, p99
    one = {"0": {"generated_tokens": [1, 2], "logprobs": [-1.0, -2.0, -3.0]}}
    other = {"0": {"generated_tokens": [1, 3], "logprobs": [-1.0, -2.0, -3.5]}}
    rc, out, _ = run(capsys, write(tmp_path, "one.json", one), write(tmp_path, "other.json", other))
    assert rc == 1 and "tokens diverge in 1 of 1 request;" in out and "1 token changed" in out
    assert "1 of 2 positions changed" in out


def test_ulps_count_in_bfloat16_rounding_each_value_first():
    import numpy as np

    from logitsmatch.judge.ulps import coarsest, ulp_distance, ulp_width

    golden = np.array([-7.5, 1.0, -7.5, -0.0])
    current = np.array([float(np.nextafter(np.float32(-7.5), np.float32(0))), 1.0078125, -7.53125, 0.0])
    assert ulp_distance(golden, current, "bfloat16").tolist() == [0, 1, 1, 0]  # 1 float32 ulp rounds away
    assert ulp_distance(golden, current, "float32").tolist() == [1, 65536, 65536, 0]
    assert ulp_width(golden, current, dtype="bfloat16") == "bfloat16"
    assert coarsest(["float32", None, "bfloat16"]) == "bfloat16" and coarsest([None, None]) is None


GPU_583M = HISTORY.parents[2] / "golden_values" / "gpt_dynamic_inference_tp8_pp1_dp1_583m_logitsmatch_zmq"


def test_ulps_are_counted_in_the_runs_dtype(capsys):
    """The H100 bf16 run against the H100 float32 run of the 583m seed: their sidecars say bfloat16 and float32,
    so the ulps are bfloat16 ulps (a logprob near -7 is 0.031 apart at 1 bfloat16 ulp, 2^18 float32 ulps)."""
    fp32, bf16 = (GPU_583M / f"golden_values_h100-tp1-{dtype}_py3.12-torch2.11.0-mcore0.19.2.json"
                  for dtype in ("fp32", "bf16"))
    rc, out, _ = run(capsys, str(fp32), str(bf16))
    assert rc == 1 and "150 of 150 logprobs moved (max 0.044, 1 bfloat16 ulp)" in out.splitlines()[0]
    header = next(line for line in out.splitlines() if line.strip().startswith("path"))
    assert header.split()[-2:] == ["ulps", "(bfloat16)"]
    cpu = GPU_583M / "golden_values_cpu_py3.12-torch2.14.1-mcore0.19.2.json"
    rc, out, _ = run(capsys, str(cpu), str(fp32))  # two float32 runs: float32 ulps, unnamed
    assert "bfloat16" not in out and "ulps (float32)" in out


def _each_suite(suites: list[str]) -> list[str]:
    return [word for name in suites for word in ("--suite", name)]


def test_compare_toolchains_ends_with_a_summary_naming_each_suite_also_under_q(project, monkeypatch, capsys):
    from logitsmatch.suites import suite_names

    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    old, new = "py3.11-torch2.13.0-mcore0.16.1", "py3.12-torch2.14.1-mcore0.19.2"
    moe = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"
    suites = main_job_zmq_cases(suite_names(project))
    assert cli.main(["compare-toolchains", old, new, "--source", "goldens", "-q", *_each_suite(suites)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(suites) >= 2 and lines[0].startswith(f"{old} -> {new}: ")
    identical = lines[1].split(": ", 1)[1].split(", ")  # the suites nothing moved in share one line
    assert lines[1].startswith(f"  PASS  {len(identical)} suites identical")
    named = sorted(line.split()[1].rstrip(":") for line in lines[2:])
    assert sorted(named + [f"gpt_dynamic_inference_{short}_logitsmatch_zmq" for short in identical]) == sorted(suites)
    moved = f"  PASS  {moe}: 0 of 4 checks failed; 36 of 158 logprobs moved (max 4.8e-7, 1 ulp), none over tolerance"
    assert any(line.startswith(moved) for line in lines)


def test_compare_toolchains_prints_tables_only_for_the_suites_that_moved(project, monkeypatch, capsys):
    """0.16.1 -> 0.19.2 on the goldens of the ZMQ cases: only the two MoE suites moved; the eight others are one
    summary line."""
    from logitsmatch.suites import suite_names

    monkeypatch.setenv("LOGITSMATCH_ROOT", str(project))
    old, new = "py3.11-torch2.13.0-mcore0.16.1", "py3.12-torch2.14.1-mcore0.19.2"
    suites = main_job_zmq_cases(suite_names(project))
    assert cli.main(["compare-toolchains", old, new, "--source", "goldens", *_each_suite(suites)]) == 0
    out = capsys.readouterr().out
    tables = [line.split(":")[0].removeprefix("== ") for line in out.splitlines() if line.startswith("== ")]
    assert tables == ["gpt_dynamic_inference_tp4_etp1_pp1_ep8_16B_logitsmatch_zmq",
                      "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"]
    assert "  PASS  8 suites identical (every compared logprob and token equal to the last bit): " in out


MOE_PAIR = ("py3.12-torch2.14.1-mcore0.17.1", "py3.12-torch2.14.1-mcore0.18.0")


@pytest.mark.parametrize("how", ["provenance sidecar", "path", "--suite"])
def test_compare_of_two_files_of_a_known_suite_uses_its_metrics(tmp_path, capsys, how):
    """Two tiny MoE goldens are judged on the suite's METRICS (routing_indices included: 4 checks, as
    compare-toolchains judges them), and the report says which metric set it used and how it was found."""
    suite = MOE_TINY.name
    sources = [MOE_TINY / f"golden_values_cpu_{toolchain}.json" for toolchain in MOE_PAIR]
    if how == "provenance sidecar":
        files = [str(path) for path in sources]
    else:  # copies outside the project: no sidecar; under a folder named after the suite, or named by --suite
        folder = tmp_path / (suite if how == "path" else "elsewhere")
        folder.mkdir()
        files = [write(folder, path.name, path.read_bytes()) for path in sources]
    rc, out, _ = run(capsys, *files, *(["--suite", suite] if how == "--suite" else []))
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("PASS: 0 of 4 checks failed;") and "routing_indices" in lines[0]
    origin = "named by --suite" if how == "--suite" else f"recognised from the {how}"
    assert lines[1] == (f"Metrics checked: generated_tokens, logprobs, routing_indices (suite {suite}'s METRICS, "
                        f"{origin})")
    assert "routing_indices in both files, not checked" not in out


def test_compare_toolchains_of_two_files_uses_their_suites_metrics(capsys):
    files = [str(MOE_TINY / f"golden_values_cpu_{toolchain}.json") for toolchain in MOE_PAIR]
    assert cli.main(["compare-toolchains", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS: 0 of 4 checks failed;")
    assert lines[1].endswith(f"(suite {MOE_TINY.name}'s METRICS, recognised from the provenance sidecar)")


def test_compare_of_unknown_files_says_it_used_the_default_metrics(tmp_path, capsys):
    files = [write(tmp_path, f"{toolchain}.json", (MOE_TINY / f"golden_values_cpu_{toolchain}.json").read_bytes())
             for toolchain in MOE_PAIR]
    rc, out, _ = run(capsys, *files)
    assert rc == 0 and out.startswith("PASS: 0 of 3 checks failed;")
    assert out.splitlines()[1] == ("Metrics checked: generated_tokens, logprobs (the default metrics: no known suite "
                                   "recognised, name one with --suite)")
    rc, out, _ = run(capsys, *files, "--suite", MOE_TINY.name, "--metrics", "logprobs")
    assert rc == 0 and out.splitlines()[1] == "Metrics checked: logprobs (named by --metrics)"
    rc, _, err = run(capsys, *files, "--suite", "no_such_suite")
    assert rc == 2 and "no_such_suite" in err
