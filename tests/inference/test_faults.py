"""Run lifecycle under faults in real TP8 runs of the tiny suite: every failure ends the run fast,
named, reaped and unpublished. SIGKILL of a rank mid-decode, SIGSTOP of a rank, the ZMQ coordinator
killed mid-decode, Ctrl-C and a taken rendezvous port here; the rest (deadline, ports, zygote killed,
truncated checkpoint, two runs at once) in scripts/fault_campaign.py; SIGKILL of `logitsmatch run`
or of its parent in both. The injectors are tests/support/faults.py; the launcher's parts are
unit-tested in test_launcher.py.
"""

from __future__ import annotations

import pytest

from support import faults, goldens_digest, installed_toolchain

DETECT_S = 30.0  # from injection to the run's end: the watch, not the deadline, must end it
RUN_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def toolchain():
    name = installed_toolchain()
    if name is None:
        pytest.fail("this venv matches no toolchain in pyproject.toml")
    before = goldens_digest()
    yield name
    assert goldens_digest() == before, "a fault run changed golden_values/"


def assert_clean_failure(outcome, run_dir_glob) -> None:
    assert not outcome.problems(), (outcome.problems(), outcome.message[-3000:])
    if outcome.after_injection_s is not None:
        assert outcome.after_injection_s < DETECT_S, outcome.after_injection_s
    run_dirs = list(run_dir_glob)
    assert len(run_dirs) == 1 and (run_dirs[0] / "FAILED").is_file()


def runs_under(root):
    return root.glob("*/*/*/.runs/*")


def test_master_port_taken(toolchain, tmp_path):
    """No ranks start: the launcher cannot bind the rendezvous port and says which."""
    outcome = faults.fault_master_port_taken(tmp_path, toolchain, RUN_TIMEOUT_S)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert outcome.elapsed_s < 60


def test_sigkill_rank_mid_decode(toolchain, tmp_path):
    outcome = faults.fault_sigkill_rank(tmp_path, toolchain, RUN_TIMEOUT_S, rank=3)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "rank 3 (pid" in outcome.message and "died in phase 'decode'" in outcome.message
    assert "--- last lines of rank 3" in outcome.message


def test_sigstop_rank(toolchain, tmp_path):
    outcome = faults.fault_sigstop_rank(tmp_path, toolchain, RUN_TIMEOUT_S, rank=5,
                                          phase="weights")
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "rank 5 (pid" in outcome.message and "is stopped" in outcome.message


def test_coordinator_killed_mid_decode(toolchain, tmp_path):
    outcome = faults.fault_kill_coordinator(tmp_path, toolchain, RUN_TIMEOUT_S)
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert "the ZMQ coordinator (pid" in outcome.message and "phase 'decode'" in outcome.message
    assert "--- last lines of rank 0" in outcome.message


def test_ctrl_c_exits_130_and_reaps_the_coordinator_too(toolchain, tmp_path):
    outcome = faults.fault_ctrl_c(tmp_path, toolchain, RUN_TIMEOUT_S, phase="coordinator")
    assert_clean_failure(outcome, runs_under(tmp_path))
    assert outcome.message.strip().splitlines()[-1] == "logitsmatch run: interrupted"


@pytest.mark.parametrize("under_parent", [False, True], ids=["logitsmatch run SIGKILLed", "its parent (nox) SIGKILLed"])
def test_no_orphan_when_a_parent_is_sigkilled(toolchain, tmp_path, under_parent):
    """An OOM killer or a cancelled CI job: zygote, ranks and coordinator all end within seconds."""
    outcome = faults.fault_parent_sigkill(tmp_path, toolchain, RUN_TIMEOUT_S, under_parent=under_parent)
    assert not outcome.problems(), (outcome.problems(), outcome.message[-3000:])
    assert outcome.leftovers == [] and outcome.after_injection_s < faults.ORPHAN_GRACE_S
