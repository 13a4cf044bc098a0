"""The shipped TikTokenizer vocabulary: format, reproducibility, the splitter (megatron-core's own tokenizer on
it: tests/inference/test_megatron_tokenizer.py)."""

from __future__ import annotations

import argparse
import base64
import json
import random
from pathlib import Path

import pytest

from logitsmatch import vocab
from logitsmatch.cli import make_vocab
from logitsmatch.errors import EXIT_DRIFT, EXIT_OK, BadInput
from support.tokenizer_texts import CORPUS, NUM_SPECIAL, SEED_PROMPT, TRICKY, VOCAB, VOCAB_SIZE

ENTRIES = 1048


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="logitsmatch make-vocab")
    make_vocab.configure(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def corpus_text() -> str:
    return CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained(corpus_text: str) -> list[bytes]:
    return vocab.train_bpe(corpus_text, ENTRIES)


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    return json.loads(VOCAB.read_text(encoding="ascii"))


# --- file format --------------------------------------------------------------


def test_size_arithmetic_avoids_padding_hazard() -> None:
    assert NUM_SPECIAL + ENTRIES == VOCAB_SIZE == 2 * 128 * 8
    assert vocab.DEFAULT_ENTRIES == ENTRIES


def test_file_format_invariants(entries: list[dict]) -> None:
    assert len(entries) == ENTRIES
    tokens = []
    for i, entry in enumerate(entries):
        assert list(entry) == ["rank", "token_bytes", "token_str"]
        assert entry["rank"] == i
        tok = base64.b64decode(entry["token_bytes"], validate=True)
        assert entry["token_str"] == tok.decode("utf-8", errors="replace")
        tokens.append(tok)
    assert tokens[:256] == [bytes([i]) for i in range(256)]
    assert len(set(tokens)) == len(tokens)
    rank = {tok: i for i, tok in enumerate(tokens)}
    for i in range(256, len(tokens)):
        tok = tokens[i]
        splits = [
            (tok[:k], tok[k:])
            for k in range(1, len(tok))
            if rank.get(tok[:k], i) < i and rank.get(tok[k:], i) < i
        ]
        assert splits, f"rank {i} {tok!r} is not the concatenation of two lower-ranked tokens"


def test_corpus_holds_seed_prompt_and_is_sized(corpus_text: str) -> None:
    assert SEED_PROMPT in corpus_text
    assert 30_000 <= len(CORPUS.read_bytes()) <= 80_000


# --- reproducibility ----------------------------------------------------------


def test_training_is_deterministic(corpus_text: str, trained: list[bytes]) -> None:
    again = vocab.train_bpe(corpus_text, ENTRIES)
    assert again == trained
    assert vocab.render_vocab(again) == vocab.render_vocab(trained)


def test_committed_file_is_what_training_produces(trained: list[bytes]) -> None:
    assert vocab.render_vocab(trained) == VOCAB.read_bytes()


def test_check_passes_on_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(
        ["--corpus", str(CORPUS), "--entries", str(ENTRIES), "--output", str(VOCAB), "--check"]
    )
    assert make_vocab.main(args) == EXIT_OK
    assert "up to date" in capsys.readouterr().out


def test_check_flags_a_modified_file(tmp_path: Path) -> None:
    stale = tmp_path / "v.json"
    stale.write_bytes(VOCAB.read_bytes().replace(b'"rank": 1047', b'"rank": 1046'))
    args = parse(["--corpus", str(CORPUS), "--output", str(stale), "--check"])
    assert make_vocab.main(args) == EXIT_DRIFT
    with pytest.raises(BadInput):
        missing = str(tmp_path / "no.json")
        make_vocab.main(parse(["--corpus", str(CORPUS), "--output", missing, "--check"]))


def test_write_is_atomic_and_refuses_to_clobber(tmp_path: Path) -> None:
    out = tmp_path / "v.json"
    small = vocab.train_bpe("the cat sat on the mat, the cat sat on the hat " * 4, 260)
    assert vocab.write_vocab(out, small) is True
    assert vocab.write_vocab(out, small) is False  # identical: untouched
    other = small[:259] + [b"zz"]
    with pytest.raises(BadInput, match="--force"):
        vocab.write_vocab(out, other)
    assert vocab.write_vocab(out, other, force=True) is True
    assert json.loads(out.read_text())[259]["token_str"] == "zz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]  # no temp files left


def test_too_small_corpus_is_bad_input() -> None:
    with pytest.raises(BadInput, match="corpus too small"):
        vocab.train_bpe("a tiny corpus", 300)
    with pytest.raises(BadInput):
        vocab.train_bpe("abc", 100)


def test_merges_never_cross_chunks() -> None:
    toks = vocab.train_bpe("ab, ab, ab, ab. 12 12 12", 256 + 2)
    assert b"1" + b"2" not in toks  # digits are split one by one by the v2 pattern
    assert b" ab" in toks


# --- the split pattern --------------------------------------------------------


def test_splitter_matches_regex_package(corpus_text: str) -> None:
    regex = pytest.importorskip("regex")
    reference = regex.compile(vocab.PATTERN_TIKTOKEN_V2)
    for text in (corpus_text, TRICKY):
        assert vocab.pretokenize(text) == reference.findall(text)
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list(
        "\t\n\r\x1c\x85\u00a0\u2028\u3000\u0301\u00e9\u01c5\u0660\u2163\u00bd"
        "\U0001f642\u65e5\u00ad\u200d"
    )
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert vocab.pretokenize(text) == reference.findall(text), repr(text)


# --- megatron-core round trip -------------------------------------------------
