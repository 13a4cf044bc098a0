"""Two matrices written into one folder at once: each writes its three files under the folder's lock, so the
Markdown, the JSON and the PNG always come from the same table."""

from __future__ import annotations

import json
import threading
import time

from logitsmatch.cli import build_parser
from logitsmatch.flows import matrix as matrix_flow
from support import TINY_SUITE

MOE_TINY = "gpt_dynamic_inference_tp4_etp1_pp1_ep8_tiny_logitsmatch_zmq"


def test_two_matrices_into_one_folder_leave_the_files_of_one_of_them(tmp_path, monkeypatch):
    """The first writer is held up between its JSON and its Markdown: without the lock the second writer's
    JSON and Markdown land in between and the folder ends with one table's JSON and the other's Markdown."""
    out = tmp_path / "out"
    real_write = matrix_flow.write_atomic

    def slow_for_the_first(path, data):
        if path.name == "matrix.md" and TINY_SUITE in data and MOE_TINY not in data:
            time.sleep(0.8)
        real_write(path, data)

    monkeypatch.setattr(matrix_flow, "write_atomic", slow_for_the_first)

    def tabulate_and_publish(suite: str) -> None:
        args = build_parser("matrix").parse_args(["matrix", "--source", "goldens", "--suite", suite,
                                                  "--out", str(out)])
        matrix_flow.publish(matrix_flow.tabulate(matrix_flow.select(None, args), args), args)

    first = threading.Thread(target=tabulate_and_publish, args=(TINY_SUITE,))
    first.start()
    time.sleep(0.3)  # the first is now between its JSON and its Markdown
    tabulate_and_publish(MOE_TINY)
    first.join()
    suites = list(json.loads((out / "matrix.json").read_text())["suites"])
    markdown = (out / "matrix.md").read_text()
    assert len(suites) == 1
    other = MOE_TINY if suites[0] == TINY_SUITE else TINY_SUITE
    assert suites[0] in markdown and other not in markdown, "the JSON and the Markdown are of different tables"
    assert not [path.name for path in out.iterdir() if path.name.endswith(".tmp")]
