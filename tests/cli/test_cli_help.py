"""The command line's help agrees with itself: every option explained, one metavar style, choices shown, the
same --platform default everywhere, a top-level description with an example, and --version."""

from __future__ import annotations

import argparse
import platform
import re

import pytest

from logitsmatch import __version__, cli
from logitsmatch.cli import SUBCOMMANDS, build_parser

FLAGS = (argparse._StoreConstAction, argparse._StoreTrueAction, argparse._StoreFalseAction,
         argparse.BooleanOptionalAction, argparse._HelpAction)
METAVAR = re.compile(r"^([A-Z][A-Z0-9_]*([=@][A-Z][A-Z0-9_]*)*|\{[a-z0-9_,]+(,[A-Z]+)?\})$")


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_option_is_explained_in_one_metavar_style(name):
    for action in subcommand_parser(name)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        where = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{where} has no help"
        if action.option_strings and not isinstance(action, FLAGS):
            shown = action.metavar or ("{" + ",".join(map(str, action.choices)) + "}" if action.choices else None)
            assert shown and METAVAR.match(shown), f"{where}: metavar {shown!r}"
        if "--platform" in action.option_strings:
            assert action.default is None and "(default: detected)" in action.help, where


def test_the_top_level_help_is_for_users_and_has_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "numerics regression suite" in out and "example" in out.lower() and "logitsmatch compare " in out
    assert "subcommand module" not in out  # no developer text
    assert "at TP-N" not in out


def test_version_names_logitsmatch_python_and_the_toolchain_packages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"logitsmatch {__version__} (Python {platform.python_version()}")
    for package in ("torch", "megatron-core"):
        assert package in out  # a version where installed, "not installed" where not


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_an_unknown_option_is_named_with_the_subcommands_usage(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main([name, "--frobnicate"] + (["a", "b"] if name == "compare" else []))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"usage: logitsmatch {name} ")
    if "required" not in err[-1]:  # a missing required argument is named first, as argparse does
        assert err[-1] == f"logitsmatch {name}: error: unrecognized arguments: --frobnicate"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_a_subcommands_help_refers_to_the_exit_code_table_in_one_line(name, capsys):
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("exit codes: 0 pass, 1 drift, 2 bad input, 3 run failed")
    assert lines[-1].endswith("(logitsmatch --help says what each means)")
    assert not any(line.startswith("    2  bad input") for line in lines)  # the table is the top level's
