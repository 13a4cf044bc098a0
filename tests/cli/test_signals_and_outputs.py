"""Signals and output targets: SIGINT and SIGTERM at any point stop a command with 130, one line and no temp
file; a report that cannot be printed (closed pipe, full disk) leaves the verdict's exit code; an output that is a
device, a terminal or a pipe is written through, never replaced; a name too long is bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from support import PROJECT, golden_file

TINY = "gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"
ENV = {**os.environ, "PYTHONPATH": str(PROJECT / "tools")}


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "logitsmatch", *args], cwd=PROJECT, env=ENV, text=True,
                            stderr=subprocess.PIPE, **{"stdout": subprocess.PIPE, **kwargs})


def big_pair(folder):
    """Two golden-format files whose compare takes seconds and writes a JSON report of tens of MB."""
    rng = random.Random(7)
    golden = {str(i): {"input_prompt": "p", "generated_text": "t", "generated_tokens": list(range(30)),
                       "logprobs": [-rng.random() for _ in range(3000)]} for i in range(60)}
    current = json.loads(json.dumps(golden))
    for entry in current.values():
        entry["logprobs"] = [value + 2e-4 for value in entry["logprobs"]]
    paths = folder / "golden.json", folder / "current.json"
    for path, document in zip(paths, (golden, current), strict=True):
        path.write_text(json.dumps(document))
    return paths


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_a_random_point_of_a_long_compare_leaves_one_line_and_no_temp_file(tmp_path, sig):
    golden, current = big_pair(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    outcomes = []
    for trial in range(4):  # scripts/hostile_campaign.py draws many more
        report = out / f"report{trial}.json"
        process = start("compare", str(golden), str(current), "--mode", "deterministic", "--json", str(report),
                        "--deepdiff", str(out / f"deepdiff{trial}.json"))
        time.sleep(random.Random(trial).uniform(0.05, 2.0))
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        outcomes.append(process.returncode)
        assert process.returncode in (130, 1), (process.returncode, stderr)  # 1: it had finished (drift)
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 2, stderr
        if process.returncode == 130:
            assert "interrupted" in stderr.strip().splitlines()[-1]
        assert not [path.name for path in out.iterdir() if path.name.startswith(".")], "a temp file stayed"
        if report.exists():
            json.loads(report.read_text())  # never half a file
    assert 130 in outcomes, outcomes


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    for delay in (0.15, 0.3, 0.5, 0.8):  # after the interpreter itself started (about 30 ms)
        process = start("matrix", "--source", "goldens", "--out", str(tmp_path / "m"))
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        if process.returncode == 0:
            continue  # it had finished
        assert process.returncode == 130, (delay, process.returncode, stderr)
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_report_that_cannot_be_printed_keeps_the_verdicts_exit_code(tmp_path):
    golden = golden_file(TINY)
    drifted = tmp_path / "drifted.json"
    document = json.loads(golden.read_text())
    first = next(iter(document))
    document[first]["logprobs"][4] += 0.5
    drifted.write_text(json.dumps(document))
    for current, verdict in ((golden, 0), (drifted, 1)):
        with open("/dev/full", "w") as full:
            process = start("compare", str(golden), str(current), stdout=full)
            _, stderr = process.communicate(timeout=120)
        assert process.returncode == verdict, stderr
        assert "could not be printed (No space left on device)" in stderr and "Traceback" not in stderr
        piped = start("compare", str(golden), str(current))
        piped.stdout.close()  # the reader went away before the report was printed
        _, stderr = piped.communicate(timeout=120)
        assert piped.returncode == verdict, stderr
        assert "Traceback" not in stderr


def _compare_to(target, *extra) -> subprocess.CompletedProcess:
    golden = golden_file(TINY)
    return subprocess.run([sys.executable, "-m", "logitsmatch", "compare", str(golden), str(golden), "-q",
                           "--json", str(target), *extra], cwd=PROJECT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_a_device_or_a_link_to_standard_output_is_written_through_not_replaced(tmp_path):
    null = _compare_to("/dev/null")
    assert null.returncode == 0, null.stderr
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    to_stdout = _compare_to("/dev/stdout")
    report, _ = json.JSONDecoder().raw_decode(to_stdout.stdout[to_stdout.stdout.index("{"):])
    assert to_stdout.returncode == 0 and report["verdict"] == "pass"
    link = tmp_path / "fd1"
    link.symlink_to("/proc/self/fd/1")
    through_link = _compare_to(link)
    assert through_link.returncode == 0 and '"schema_version"' in through_link.stdout
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    into_fifo = _compare_to(fifo)
    assert into_fifo.returncode == 0 and '"verdict": "pass"' in reader.communicate(timeout=60)[0]
    assert not fifo.is_file()


def test_names_too_long_are_bad_input_and_the_longest_legal_name_is_written(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    too_long = _compare_to(tmp_path / ("a" * (limit + 1)))
    assert too_long.returncode == 2 and len(too_long.stderr.strip().splitlines()) == 1
    assert "longer than this file system allows" in too_long.stderr
    longest = tmp_path / ("b" * limit)
    written = _compare_to(longest)
    assert written.returncode == 0, written.stderr
    assert json.loads(longest.read_text())["verdict"] == "pass"
    assert sorted(path.name for path in tmp_path.iterdir()) == [longest.name]


def test_a_request_id_with_an_escape_sequence_is_shown_escaped_not_sent_to_the_terminal(tmp_path):
    document = json.loads(golden_file(TINY).read_text())
    document["\x1b[31mred\x1b]0;title\x07"] = document.pop(next(iter(document)))
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(document))
    completed = subprocess.run([sys.executable, "-m", "logitsmatch", "compare", str(golden_file(TINY)), str(hostile)],
                               cwd=PROJECT, env=ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert "\x1b" not in completed.stdout and "\x07" not in completed.stdout
    assert "\\x1b[31mred\\x1b]0;title\\x07" in completed.stdout
