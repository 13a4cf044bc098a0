"""How an engine takes the coordinator's requests: which ids it served, and (one engine) the hold.

``RequestIntake`` wraps a real engine's ``add_request`` in a run (tests/inference/test_family.py shows the
served-by map of real DP runs); here a recording stand-in engine shows the semantics exactly.
"""

from __future__ import annotations

from logitsmatch.rank.request_intake import RequestIntake
from logitsmatch.run.runfiles import PhaseRecorder, RunDir


class RecordingEngine:
    def __init__(self):
        self.added: list[tuple] = []

    def add_request(self, request_id, prompt, sampling_params=None):
        self.added.append((request_id, prompt, sampling_params))
        return "ignored by the coordinator path"


def test_one_engine_holds_until_every_prompt_arrived_then_adds_them_in_order():
    engine = RecordingEngine()
    intake = RequestIntake(engine, hold=3)
    engine.add_request(0, "a", "sp")
    engine.add_request(1, "b", sampling_params="sp")
    assert engine.added == []  # held
    engine.add_request(2, "c", "sp")
    assert engine.added == [(0, "a", "sp"), (1, "b", "sp"), (2, "c", "sp")]
    assert intake.request_ids == [0, 1, 2]
    assert "adds the 3 submitted requests together" in intake.description()[0]


def test_without_a_hold_each_request_is_added_as_it_arrives_and_recorded():
    engine = RecordingEngine()
    intake = RequestIntake(engine, hold=None)
    engine.add_request(5, "x")
    assert engine.added == [(5, "x", None)]
    engine.add_request(7, "y")
    assert intake.request_ids == [5, 7] and intake.description() == []


def test_rank_status_carries_peak_memory_and_served_by(tmp_path):
    run = RunDir.create(tmp_path)
    for rank in range(2):
        recorder = PhaseRecorder(run, rank)
        recorder.enter("init")
        if rank == 0:
            recorder.extra["coordinator_peak_rss_mib"] = 365.9
        recorder.finish(peak_rss_mib=400.0 + rank)
    assert run.memory(2) == {"peak_rss_mib_per_rank": [400.0, 401.0], "coordinator_peak_rss_mib": 365.9}
    assert run.rank_status(1)["phase"] == "done"
    assert run.read_served_by() is None and run.read_coordinator_schedule() is None
    run.write_served_by({"0": 1, "1": 0})
    assert run.read_served_by() == {"0": 1, "1": 0}
