"""flows.determinism: two runs must be bit-identical, and the check must say so when they are not."""

from __future__ import annotations

import json
import math

from logitsmatch import log
from logitsmatch.flows.determinism import judge
from support import TINY_SUITE, golden_file


def test_determinism_judge_says_when_runs_differ(tmp_path, capsys):
    log.configure(0)  # the default verbosity, whatever an earlier in-process command (-q) left
    golden = json.loads(golden_file(TINY_SUITE).read_text())
    first, same, moved = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    first.write_text(json.dumps(golden))
    same.write_text(json.dumps(golden))
    golden["2"]["logprobs"][7] = math.nextafter(golden["2"]["logprobs"][7], 0.0)  # one ulp
    moved.write_text(json.dumps(golden))
    assert judge([first, same], tmp_path)
    assert "DETERMINISTIC: run 2 is bit-identical to run 1" in capsys.readouterr().out
    assert not judge([first, same, moved], tmp_path)
    out = capsys.readouterr().out
    assert "NOT DETERMINISTIC: run 3 differs from run 1" in out and "FAIL" in out
    assert (tmp_path / "report-3.md").is_file()
