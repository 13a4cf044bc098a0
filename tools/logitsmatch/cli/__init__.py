"""`logitsmatch` command line: one subcommand per module of this package, imported on use.

Each subcommand module exposes ``configure(parser)``, ``main(args) -> int``
and ``EXAMPLE`` (shown by ``--help``); its ``main`` starts the subcommand's
flow (``logitsmatch.flows``), which imports torch or megatron-core only inside
functions (through ``logitsmatch.rank``), so `logitsmatch compare` stays fast
and works without a toolchain.

``main`` is the one place exit codes leave (``logitsmatch.errors.ExitCode``):
a ``LogitsmatchError`` is one stderr line and its code, Ctrl-C is 130, and any
other exception is an internal error (70), never drift: one line names the log
file that holds its traceback (printed on the terminal too with ``-v``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import os
import platform
import signal
import sys
import threading
from typing import NoReturn

from logitsmatch import files, log
from logitsmatch.cli.guard import ReportStream, report_internal_error, stop_as_ctrl_c, stop_while_starting
from logitsmatch.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, LogitsmatchError, exit_code_help, exit_code_line

SUBCOMMANDS = {
    "compare": ("logitsmatch.cli.compare", "compare two golden-format files and report drift"),
    "run": ("logitsmatch.cli.run", "run one suite at its parallel layout in this venv's toolchain and judge it"),
    "compare-toolchains": ("logitsmatch.cli.compare_toolchains",
                           "report which logprobs/tokens moved between two toolchains"),
    "matrix": ("logitsmatch.cli.matrix", "N x N drift table of toolchains (Markdown, JSON, heatmap PNG)"),
    "invariance": (
        "logitsmatch.cli.invariance",
        "one suite at several parallel layouts, N x N (Markdown, JSON, heatmap PNG)",
    ),
    "determinism": ("logitsmatch.cli.determinism", "run a suite twice and demand bit-identical results"),
    "record": ("logitsmatch.cli.record", "make a fresh result the golden (shows the diff; --force to replace)"),
    "localize": ("logitsmatch.cli.localize", "name the first module whose output differs between two captures"),
    "explain": ("logitsmatch.cli.explain", "explain a drift: harness inputs, packages, commit, first moving module"),
    "watch": ("logitsmatch.cli.watch", "which commits of megatron-core move which suite, each change proven"),
    "upstream-check": ("logitsmatch.cli.upstream_check", "does an upstream finding still hold at a release or commit"),
    "verify": ("logitsmatch.cli.verify", "check every golden against its provenance sidecar (one record each)"),
    "collect": ("logitsmatch.cli.collect", "merge result trees from many machines into one, keyed by hardware class"),
    "make-vocab": ("logitsmatch.cli.make_vocab", "train the shipped TikTokenizer BPE vocabulary (or --check it)"),
}


def _size(text: str) -> int:
    try:
        return files.parse_size(text)
    except LogitsmatchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DESCRIPTION = """\
logitsmatch: a numerics regression suite for Megatron-Core inference. It runs Megatron-LM's
logits-match cases on 8 ranks in pinned toolchains (Python x torch x megatron-core), judges the
tokens and logprobs against goldens in Megatron's format, and says which values moved, by how
much, and why."""

EPILOG = """\
examples:
  logitsmatch compare golden_values_dev_dgx_h100.json result.json     judge two golden-format files
  logitsmatch compare-toolchains py3.11-torch2.13.0-mcore0.16.1 py3.12-torch2.14.1-mcore0.19.2
  logitsmatch COMMAND --help                                            a command's options and example"""


def version_text() -> str:
    """logitsmatch's version, the interpreter's, and torch's and megatron-core's where installed."""
    from logitsmatch import __version__

    def installed(package: str) -> str:
        try:
            return f"{package} {importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{package} not installed"

    return f"logitsmatch {__version__} (Python {platform.python_version()}, {installed('torch')}, " \
           f"{installed('megatron-core')})"


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                       help="print only warnings, errors and the verdict")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                       help="print debugging detail too (and an internal error's traceback)")
    common.add_argument("--max-input-bytes", type=_size, default=files.DEFAULT_MAX_INPUT_BYTES,
                        metavar="SIZE", help="refuse an input file larger than this (bytes, or with K/M/G; "
                        "default 1G)")
    return common


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands listed; only ``command``'s module is imported and configured."""
    parser = argparse.ArgumentParser(
        prog="logitsmatch",
        description=DESCRIPTION,
        epilog=f"{EPILOG}\n\n{exit_code_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="show logitsmatch's, Python's, torch's and megatron-core's versions and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name, help=help_text, description=help_text, parents=[common],
            epilog=f"example:\n  {module.EXAMPLE}\n\n{exit_code_line()}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub_parser)
        sub_parser.set_defaults(_handler=module.main, _parser=sub_parser)
    return parser


def entry() -> NoReturn:
    """The process's entry (the ``logitsmatch`` script, ``python -m logitsmatch``).

    Until the command's modules are imported and its arguments parsed, Ctrl-C or SIGTERM ends the process at
    once with 130 (nothing is written yet; an import cut short can crash the interpreter's exit). Once the
    code is decided, signals are ignored and the process ends by ``os._exit``: the interpreter's teardown
    (which resets Python's handlers, and re-raises a SIGINT it saw) cannot replace the code.
    """
    for stopping in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stopping, stop_while_starting)
    try:
        code = main(restore_signals=False)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    for stopping in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stopping, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)  # every file is written and closed: the interpreter's teardown cannot change the code


def main(argv: list[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run one subcommand; its exit code (errors.ExitCode) is the return value. Once the command starts,
    Ctrl-C and SIGTERM stop it (the writers' cleanup runs, exit 130); that handling and the report stream
    last as long as the command: a caller in the same process (a test) gets its own back."""
    argv = sys.argv[1:] if argv is None else argv
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {stopping: signal.getsignal(stopping) for stopping in (signal.SIGINT, signal.SIGTERM)}

    def started() -> None:
        if in_main_thread:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, stop_as_ctrl_c)

    stdout = sys.stdout = ReportStream(sys.stdout)
    try:
        return _run(argv, started)
    except KeyboardInterrupt:  # before the command started (a caller's own Ctrl-C handling was in place)
        print("logitsmatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        stdout.close_quietly()
        sys.stdout = stdout.stream
        if in_main_thread and restore_signals:
            for stopping, handler in previous.items():
                signal.signal(stopping, handler)


def _run(argv: list[str], started) -> int:
    parser = build_parser(next((arg for arg in argv if arg in SUBCOMMANDS), None))
    args, unknown = parser.parse_known_args(argv)  # a usage error exits 2 (argparse's own code, the bad-input code)
    if unknown:  # named by the subcommand, with its usage, not the top level's
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    log.configure(args.verbosity)
    started()
    try:
        files.set_max_input_bytes(args.max_input_bytes)
        return int(args._handler(args))
    except LogitsmatchError as exc:
        print(f"logitsmatch {args.command}: error: {log.visible(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"logitsmatch {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - the one place an unexpected error becomes EXIT_INTERNAL, never drift
        report_internal_error(args.command, argv, args.verbosity > 0)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
