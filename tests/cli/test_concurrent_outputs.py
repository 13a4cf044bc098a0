"""Two matrices written into one folder at once: each writes its three files under the folder's lock, so the
Markdown, the JSON and the PNG always come from the same table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import PROJECT, TINY_SUITE

MOE_TINY = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def test_two_matrices_into_one_folder_leave_the_files_of_one_of_them(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "tools")}
    for trial in range(2):
        out = tmp_path / f"out{trial}"
        processes = [subprocess.Popen([sys.executable, "-m", "logitsmatch", "matrix", "--source", "goldens", "--suite",
                                       suite, "--out", str(out), "-q"], cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for suite in (TINY_SUITE, MOE_TINY)]
        for process in processes:
            assert process.wait(timeout=300) in (0, 1), process.stderr.read()
        suites = list(json.loads((out / "matrix.json").read_text())["suites"])
        assert len(suites) == 1
        markdown = (out / "matrix.md").read_text()
        other = MOE_TINY if suites[0] == TINY_SUITE else TINY_SUITE
        assert suites[0] in markdown and other not in markdown
        assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
