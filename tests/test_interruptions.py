"""Signals and broken outputs: SIGINT and SIGTERM at any point stop a command with 130, one line and no temp
file; a report that cannot be printed (closed pipe, full disk) leaves the verdict's exit code."""

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
    for trial in range(6):
        report = out / f"report{trial}.json"
        process = start("compare", str(golden), str(current), "--mode", "deterministic", "--json", str(report),
                        "--deepdiff", str(out / f"deepdiff{trial}.json"))
        time.sleep(random.Random(trial).uniform(0.05, 3.0))
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
