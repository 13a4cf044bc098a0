"""`logitsmatch make-vocab`: train the shipped TikTokenizer vocabulary (``logitsmatch.vocab``), or check it."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from logitsmatch.errors import EXIT_DRIFT, EXIT_OK
from logitsmatch.files import read_input, refuse_output_over_inputs
from logitsmatch.vocab import DEFAULT_ENTRIES, NUM_SPECIAL_TOKENS, read_corpus, render_vocab, train_bpe, write_vocab

EXAMPLE = ("logitsmatch make-vocab --corpus model_configs/tokenizer/corpus.txt "
           "--output model_configs/tokenizer/logitsmatch-bpe-2048.vocab.json --check")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", metavar="PATH", required=True, help="UTF-8 text to train on")
    parser.add_argument(
        "--entries",
        type=int,
        metavar="N",
        default=DEFAULT_ENTRIES,
        help=f"file entries: 256 bytes + merges (default {DEFAULT_ENTRIES}; "
        f"{NUM_SPECIAL_TOKENS} + entries should be a multiple of 128 x TP)",
    )
    parser.add_argument("--output", metavar="PATH", required=True, help="vocabulary JSON to write or check")
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate in memory; exit 1 if --output differs (writes nothing)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a different --output")


def main(args: argparse.Namespace) -> int:
    refuse_output_over_inputs([args.output], [args.corpus])
    tokens = train_bpe(read_corpus(args.corpus), args.entries)
    data = render_vocab(tokens)
    digest = hashlib.sha256(data).hexdigest()
    vocab_size = NUM_SPECIAL_TOKENS + len(tokens)
    if args.check:
        output = Path(args.output)
        if read_input(output, "vocabulary file") != data:
            print(
                f"logitsmatch make-vocab: {output} differs from the vocabulary regenerated "
                f"from {args.corpus} (expected sha256 {digest})",
                file=sys.stderr,
            )
            return EXIT_DRIFT
        print(f"{output}: up to date ({len(tokens)} entries, sha256 {digest})")
        return EXIT_OK
    changed = write_vocab(args.output, tokens, force=args.force)
    state = "wrote" if changed else "unchanged"
    print(
        f"{state} {args.output}: {len(tokens)} entries, vocab_size {vocab_size} "
        f"with {NUM_SPECIAL_TOKENS} specials, sha256 {digest}"
    )
    return EXIT_OK
