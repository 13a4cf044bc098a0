"""judge.policy's add_policy_options / Policy.from_args: one declaration of the policy options, each
subcommand's defaults kept, and a bad value is one stderr line with exit 2 in every subcommand."""

from __future__ import annotations

import pytest

from logitsmatch import cli
from logitsmatch.judge.localize import DEFAULT_TOLERANCE
from logitsmatch.judge.policy import POLICY_OPTIONS, Mode, Policy, policy_over
from support import DEFAULT_TOOLCHAIN, TINY_SUITE

# Each subcommand that takes policy options: its required arguments, the Policy fields it fixes in main(),
# and the Policy it judges with when no policy option is given.
SUBCOMMANDS = {
    "compare": (["golden.json", "current.json"], {}, Policy()),
    "localize": (["a", "b"], {"mode": Mode.APPROXIMATE, "failure_budget": 0}, DEFAULT_TOLERANCE),
    "invariance": ([TINY_SUITE, "--toolchain", DEFAULT_TOOLCHAIN], {}, Policy(mode=Mode.MEGATRON, abs_tol=1e-4)),
    "explain": (["--baseline-python", "python3"], {}, Policy(mode=Mode.DETERMINISTIC)),
}


def parse(command: str, *options: str):
    required, _, _ = SUBCOMMANDS[command]
    return cli.build_parser(command).parse_args([command, *required, *options])


def policy_actions(command: str) -> dict:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a for a in sub._actions if a.dest in POLICY_OPTIONS}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_keeps_its_default_policy(command):
    _, fixed, expected = SUBCOMMANDS[command]
    if command == "compare":  # its options default to the recognised suite's values; with none, Policy()'s
        assert policy_over(None, parse(command)) == expected
    else:
        assert Policy.from_args(parse(command), **fixed) == expected


def test_compare_options_given_override_the_suites_policy():
    suite = Policy(metrics=("generated_tokens", "logprobs", "routing_indices"), abs_tol=2e-3)
    assert policy_over(suite, parse("compare")) == suite
    assert policy_over(suite, parse("compare", "--metrics", "logprobs")) == Policy(metrics=("logprobs",), abs_tol=2e-3)
    # a mode given alone brings its own tolerances: the suite's 2e-3 would make deterministic invalid
    assert policy_over(suite, parse("compare", "--mode", "deterministic")) == Policy(
        mode=Mode.DETERMINISTIC, metrics=suite.metrics)


def test_given_values_reach_the_policy():
    args = parse("compare", "--mode", "approximate", "--abs-tol", "2e-4", "--rel-tol", "0", "--failure-budget", "3",
                 "--no-nan-equal", "--metrics", "logprobs, generated_text", "--request-subset")
    expected = Policy(mode=Mode.APPROXIMATE, abs_tol=2e-4, rel_tol=0.0, failure_budget=3, nan_equal=False,
                      metrics=("logprobs", "generated_text"), request_subset=True)
    assert Policy.from_args(args) == expected
    localize = Policy.from_args(parse("localize", "--rel-tol", "1e-3"), mode=Mode.APPROXIMATE, failure_budget=0)
    assert (localize.abs_tol, localize.rel_tol) == (DEFAULT_TOLERANCE.abs_tol, 1e-3)
    invariance = Policy.from_args(parse("invariance", "--abs-tol", "2e-4"), metrics=["generated_tokens"])
    assert (invariance.mode, invariance.abs_tol, invariance.metrics) == (Mode.MEGATRON, 2e-4, ("generated_tokens",))


def test_options_are_declared_one_way():
    declared = {command: policy_actions(command) for command in SUBCOMMANDS}
    assert set(declared["compare"]) == set(POLICY_OPTIONS)
    assert set(declared["localize"]) == {"abs_tol", "rel_tol"} and set(declared["invariance"]) == {"abs_tol"}
    assert set(declared["explain"]) == {"mode", "abs_tol", "rel_tol"}
    for actions in declared.values():
        for dest, action in actions.items():
            reference = declared["compare"][dest]
            assert action.option_strings == reference.option_strings and action.metavar == reference.metavar, dest
            assert action.help, f"{dest} has no help"
    assert declared["compare"]["mode"].metavar == "{megatron,deterministic,approximate}"
    assert [declared["compare"][d].metavar for d in ("abs_tol", "rel_tol", "failure_budget")] == ["X", "X", "N"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
@pytest.mark.parametrize("option, fragment", [("--abs-tol=abc", "abs_tol must be a number, got 'abc'"),
                                              ("--abs-tol=-1", "abs_tol must be a finite number >= 0")])
def test_a_bad_value_is_one_line_and_exit_2(command, option, fragment, capsys):
    required, _, _ = SUBCOMMANDS[command]
    assert cli.main([command, *required, option]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"logitsmatch {command}: error: ")
    assert len(err.splitlines()) == 1 and fragment in err


def test_a_bad_mode_is_one_line_and_exit_2(capsys):
    assert cli.main(["explain", "--baseline-python", "python3", "--mode", "fuzzy"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "unknown comparison mode 'fuzzy'" in err
