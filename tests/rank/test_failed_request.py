"""A request megatron-core failed ends the run (rank 0 raises), never a result of no tokens (rank.worker.failure)."""

from __future__ import annotations

from enum import Enum
from types import SimpleNamespace

from logitsmatch.rank.worker import failure

Status = Enum("Status", ["COMPLETED", "FAILED"])
EventType = Enum("EventType", ["ADD", "ERROR_NONTRANSIENT", "FAIL"])


class MaxSequenceLengthOverflowError(Exception):
    """Named as megatron-core names the error of a prompt over the context's max_sequence_length."""


def event(kind: str, payload=None):
    return SimpleNamespace(type=EventType[kind], payload=payload)


def test_a_failed_request_names_megatrons_error():
    record = SimpleNamespace(status=Status.FAILED, events=[event("ADD"), event("ERROR_NONTRANSIENT",
                                                                                MaxSequenceLengthOverflowError(0)),
                                                            event("FAIL")])
    assert failure(record) == "ERROR_NONTRANSIENT MaxSequenceLengthOverflowError"


def test_a_failed_request_without_an_error_event_still_fails():
    assert failure(SimpleNamespace(status=Status.FAILED, events=[])) == "status FAILED, no error event"


def test_a_completed_request_is_no_failure():
    assert failure(SimpleNamespace(status=Status.COMPLETED, events=[event("ADD")])) is None
    assert failure(SimpleNamespace(events=[])) is None  # a record without a status (the static engine's)
