"""`logitsmatch` command line: one subcommand per module, imported on use.

Each subcommand module exposes ``configure(parser)`` and ``main(args) -> int``
and imports torch or megatron-core only inside functions, so `logitsmatch
compare` stays fast and works without a toolchain.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from logitsmatch.errors import EXIT_INTERRUPTED, LogitsmatchError

SUBCOMMANDS = {
    "compare": ("logitsmatch.compare_cli", "compare two golden-format files and report drift"),
    "run": ("logitsmatch.run_cli", "run one suite at TP-N in this venv's toolchain and judge it"),
    "compare-toolchains": ("logitsmatch.compare_toolchains_cli", "report which logprobs/tokens moved between two toolchains"),
    "matrix": ("logitsmatch.matrix_cli", "N x N drift table of toolchains (Markdown, JSON, heatmap PNG)"),
    "determinism": ("logitsmatch.determinism_cli", "run a suite twice and demand bit-identical results"),
    "record": ("logitsmatch.record_cli", "make a fresh result the golden (shows the diff; --force to replace)"),
    "make-vocab": ("logitsmatch.make_vocab", "train the shipped TikTokenizer BPE vocabulary (or --check it)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands listed; only ``command``'s module is imported and configured."""
    parser = argparse.ArgumentParser(prog="logitsmatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((arg for arg in argv if arg in SUBCOMMANDS), None))
    args = parser.parse_args(argv)
    try:
        return int(args._handler(args))
    except LogitsmatchError as exc:
        print(f"logitsmatch {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"logitsmatch {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
