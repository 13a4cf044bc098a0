"""The exit-code contract and the file rules behind it (issue 17), checked one rule at a time.

tests/cli/test_fuzz.py throws hostile inputs at every subcommand's process; these tests pin what each
rule means: the code table, the internal-error handler, regular inputs under a cap, umask modes,
types before numbers, Megatron's double encoding, duplicate ids, names that are not paths, NO
GOLDEN, and what localize says about captures it cannot align.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from logitsmatch import cli, files, paths
from logitsmatch.errors import EXIT_CODE_TABLE, EXIT_INTERNAL, EXIT_NO_GOLDEN, BadInput, ExitCode
from logitsmatch.judge import golden_io
from logitsmatch.judge.golden_io import load_golden
from support import PROJECT, TINY_SUITE, golden_file
from support.fuzz import _capture

GOLDEN = golden_file(TINY_SUITE)


def test_the_exit_code_table_is_one_contract_in_the_readme_and_in_help():
    readme = (PROJECT / "README.md").read_text()
    section = readme[readme.index("## Exit codes"):]
    rows = [int(code) for code in re.findall(r"^\| (\d+) \|", section[: section.index("\n## ")], re.M)]
    assert rows == [int(code) for code in ExitCode] == [int(code) for code in EXIT_CODE_TABLE]
    shown = subprocess.run([sys.executable, "-m", "logitsmatch", "--help"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")}, timeout=60).stdout
    assert all(re.search(rf"^\s+{int(code)}\s+\S", shown, re.M) for code in ExitCode)
    usage = subprocess.run([sys.executable, "-m", "logitsmatch", "compare", "--no-such-flag"], capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(PROJECT / "tools")}, timeout=60)
    assert usage.returncode == ExitCode.BAD_INPUT  # argparse's own usage code is the bad-input code


def test_an_unexpected_exception_is_an_internal_error_with_its_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    from logitsmatch.cli import compare as compare_cli

    def broken(args):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(compare_cli, "main", broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert cli.main(["compare", str(GOLDEN), str(GOLDEN)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    (log_file,) = (tmp_path / "logitsmatch").glob("crash-*.log")
    assert err.count("\n") == 1 and "internal error" in err and str(log_file) in err and "Traceback" not in err
    assert "ZeroDivisionError: planted" in log_file.read_text() and "Traceback" in log_file.read_text()
    assert cli.main(["compare", "-v", str(GOLDEN), str(GOLDEN)]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_special_files_are_refused_without_being_read(tmp_path):
    fifo, zero = tmp_path / "fifo", tmp_path / "zero"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    with pytest.raises(BadInput, match="is a FIFO"):
        files.read_input(fifo)
    with pytest.raises(BadInput, match=r"is a character device \(a link to /dev/zero\)"):
        files.read_input(zero)
    with pytest.raises(BadInput, match="is a directory"):
        load_golden(tmp_path)
    files.set_max_input_bytes(1000)
    try:
        with pytest.raises(BadInput, match="over the input limit of 1000"):
            load_golden(GOLDEN)
    finally:
        files.set_max_input_bytes(files.DEFAULT_MAX_INPUT_BYTES)
    assert files.parse_size("1G") == files.DEFAULT_MAX_INPUT_BYTES and files.parse_size("64KiB") == 65536


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        target = tmp_path / "report.json"
        golden_io.write_json_atomic(target, {"a": 1})
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask
        target.chmod(0o600)  # replacing a file gives the new file the umask's mode, as open() would
        files.write_atomic(target, "x")
        assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


def test_an_output_that_is_an_input_is_refused(tmp_path):
    link = tmp_path / "report.json"
    link.symlink_to(GOLDEN)
    for output in (GOLDEN, link, str(GOLDEN.parent / ".." / GOLDEN.parent.name / GOLDEN.name)):
        with pytest.raises(BadInput, match="is the input"):
            files.refuse_output_over_inputs([None, output], [GOLDEN])
    files.refuse_output_over_inputs([tmp_path / "other.json"], [GOLDEN, None])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "stdlib"])
def test_types_before_numbers_named_by_deepdiff_path(tmp_path, monkeypatch, orjson):
    if not orjson:
        monkeypatch.setattr(golden_io, "orjson", None)
    doc = json.loads(GOLDEN.read_text())
    cases = {
        ("1", "logprobs", 7, True): "logprobs[7] is a boolean, expected a number (at root['1']['logprobs'][7])",
        ("1", "generated_tokens", 2, 3.0): "generated_tokens[2] is a number, expected an integer",
        ("1", "generated_tokens", 2, -1):
            "is -1, expected a non-negative integer id (at root['1']['generated_tokens'][2])",
        ("1", "generated_tokens", 2, True): "generated_tokens[2] is a boolean",
    }
    for (rid, field, index, value), message in cases.items():
        bad = json.loads(json.dumps(doc))
        bad[rid][field][index] = value
        with pytest.raises(BadInput, match=re.escape(message)):
            load_golden(write(tmp_path, "bad.json", json.dumps(bad)))
    for routing, message in (([[[1, 1.5]]], "routing_indices[0][0][1] is a number"),
                             ([[["3"]]], "routing_indices[0][0][0] is a string"),
                             ([[[0, -2]]], "routing_indices[0][0][1] is -2"),
                             ([[1, [2]]], "routing_indices[0] mixes ids and lists at one depth")):
        bad = json.loads(json.dumps(doc))
        bad["0"]["routing_indices"] = routing
        with pytest.raises(BadInput, match=re.escape(message)):
            load_golden(write(tmp_path, "bad.json", json.dumps(bad)))
    good = json.loads(json.dumps(doc))
    good["0"]["routing_indices"] = [[[0, 63], [5, 6]], [[1, 2], [3, 4]]]
    assert load_golden(write(tmp_path, "good.json", json.dumps(good)))["0"]["routing_indices"][1][1] == [3, 4]


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "stdlib"])
def test_double_encoding_and_duplicate_ids(tmp_path, monkeypatch, orjson):
    if not orjson:
        monkeypatch.setattr(golden_io, "orjson", None)
    text = GOLDEN.read_text()
    plain = load_golden(GOLDEN)
    assert load_golden(write(tmp_path, "double.json", json.dumps(text))) == plain  # Megatron: json.loads twice
    assert load_golden(write(tmp_path, "spaced.json", json.dumps(json.loads(text), separators=(", ", " : ")))) == plain
    doc = json.loads(text)
    with pytest.raises(BadInput, match="request id '1' appears twice"):
        load_golden(write(tmp_path, "dup.json", text.rstrip()[:-1] + ', "1": ' + json.dumps(doc["1"]) + "}"))
    with pytest.raises(BadInput, match="request id '1' appears twice"):  # inside the double encoding too
        load_golden(write(tmp_path, "dup2.json", json.dumps(text.rstrip()[:-1] + ', "1": {}}')))
    with pytest.raises(BadInput, match="request '0': key 'logprobs' appears twice"):
        load_golden(write(tmp_path, "dup3.json", text.replace('"logprobs":', '"logprobs": [], "logprobs":', 1)))
    with pytest.raises(BadInput, match="top level is a number"):
        load_golden(write(tmp_path, "number.json", json.dumps("3")))


def test_names_are_not_paths():
    from logitsmatch.run.platforms import check_label

    for name in ("../../x/s1", "/abs", "..", "a/b", ".hidden", "x\x00y", ""):
        with pytest.raises(BadInput):
            paths.result_dir(name, "cpu", "t")
        with pytest.raises(BadInput):
            paths.golden_path("s", name, "t")
    for label in ("cpu", "dgx_h100", "cpu-tp1-fp32", "h100-tp2pp2dp2-bf16"):
        assert check_label(label) == label
    for label in ("mars", "cpu-", "cpu-tp1", "cpu-bogus-fp32", "../cpu", "cpu-tp1-fp64"):
        with pytest.raises(BadInput, match="unknown platform"):
            check_label(label)


def test_a_missing_golden_is_no_golden_naming_the_record_command(tmp_path, capsys):
    from logitsmatch.judge.verdict import judge_against_golden
    from logitsmatch.suites import load_suite

    suite = load_suite(PROJECT, TINY_SUITE)
    assert judge_against_golden(suite, GOLDEN, tmp_path / "golden_values_cpu_t.json", "t") == EXIT_NO_GOLDEN
    out = capsys.readouterr().out
    assert out.startswith("NO GOLDEN: ") and f"nox -s record -- t {TINY_SUITE}" in out


def test_localize_names_what_it_cannot_align(tmp_path):
    from logitsmatch.judge.localize import localize, read_capture
    from logitsmatch.render.localize import markdown, terminal

    a = _capture(tmp_path / "a", [("embedding", [4, 8], "torch.float32"), ("decoder.layers.0", [4, 8], "torch.float32"),
                                  ("output_layer", [4, 16], "torch.float32")])
    b = _capture(tmp_path / "b", [("embedding", [4, 8], "torch.float32"), ("decoder.layers.0", [4, 9], "torch.float32"),
                                  ("decoder.extra", [4, 8], "torch.float32"),
                                  ("output_layer", [4, 16], "torch.bfloat16")])
    result = localize(read_capture(a), read_capture(b))
    rows = {row.name: row for row in result.rows}
    assert set(rows) == {"embedding", "decoder.layers.0", "output_layer"}
    assert rows["decoder.layers.0"].mismatch.startswith("shape [4, 8] vs [4, 9]")
    assert rows["decoder.layers.0"].max_abs_delta is None  # no inf made up for it
    assert "dtype torch.float32 vs torch.bfloat16" in rows["output_layer"].mismatch
    assert rows["output_layer"].max_abs_delta is not None and np.isfinite(rows["output_layer"].max_abs_delta)
    assert result.missing == ["decoder.extra#0 (prefill): only in the second capture"]
    shown = terminal(result) + markdown(result) + json.dumps(result.to_dict())
    assert "only in the second capture" in shown and "shape [4, 8] vs [4, 9]" in shown and "inf" not in shown


def test_an_empty_localize_plot_says_why(tmp_path):
    import io

    from logitsmatch.judge import localize as loc
    from logitsmatch.render import localize as drawn

    a = _capture(tmp_path / "a", [("embedding", [4, 8], "torch.float32")])
    b = _capture(tmp_path / "b", [("embedding", [4, 9], "torch.float32")])
    unaligned = loc.localize(loc.read_capture(a), loc.read_capture(b))
    same = loc.localize(loc.read_capture(a), loc.read_capture(a))

    def deltas(result):
        return [math.nan if row.max_abs_delta is None else row.max_abs_delta for row in result.rows]

    assert "1 of the 1 outputs both captures have differ in shape or dtype" in drawn.empty_plot_note(
        unaligned, deltas(unaligned))
    assert drawn.empty_plot_note(loc.Localization([], loc.DEFAULT_TOLERANCE), []).startswith(
        "Nothing to plot: the two captures share no module output")
    assert drawn.empty_plot_note(same, deltas(same)).startswith("Flat at the floor")
    pytest.importorskip("matplotlib")
    image = io.BytesIO()
    drawn.plot(unaligned, image)
    assert image.getvalue().startswith(b"\x89PNG")
