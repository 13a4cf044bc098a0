"""`logitsmatch run`'s errors point at the right thing: an unknown suite is named (with the known ones) before
anything about this venv is asked."""

from __future__ import annotations

from logitsmatch.cli import main as cli_main
from logitsmatch.errors import BadInput
from logitsmatch.flows import run_suite
from support import DEFAULT_TOOLCHAIN, TINY_SUITE


def test_an_unknown_suite_is_named_before_the_venv_is_checked(monkeypatch, capsys):
    def no_torch(toolchain):
        raise BadInput("this venv has no torch: run inside a toolchain venv (nox -s logitsmatch)")

    monkeypatch.setattr(run_suite, "verify_toolchain", no_torch)
    assert cli_main(["run", "no_such_suite", "--toolchain", DEFAULT_TOOLCHAIN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown suite 'no_such_suite' (known: " in err[0] and TINY_SUITE in err[0]
    assert cli_main(["run", TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN]) == 2
    assert "this venv has no torch" in capsys.readouterr().err
