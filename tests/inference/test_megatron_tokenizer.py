"""The shipped vocabulary in megatron-core's own TikTokenizer: the pattern, a round trip, the chunking, the factory.

These need a toolchain venv (megatron-core and tiktoken); tests/run/test_vocab.py checks the file itself.
"""

from __future__ import annotations

import pytest

from logitsmatch import vocab
from support.tokenizer_texts import CORPUS, NUM_SPECIAL, SEED_PROMPT, TRICKY, VOCAB, VOCAB_SIZE


@pytest.fixture(scope="module")
def corpus_text() -> str:
    return CORPUS.read_text(encoding="utf-8")


def test_pattern_is_megatrons() -> None:
    from megatron.core.tokenizers.text.libraries import tiktoken_tokenizer

    assert vocab.PATTERN_TIKTOKEN_V2 == tiktoken_tokenizer._PATTERN_TIKTOKEN_V2


@pytest.fixture(scope="module")
def megatron_tokenizer():
    from megatron.core.tokenizers.text.libraries.tiktoken_tokenizer import TikTokenTokenizer

    return TikTokenTokenizer(
        str(VOCAB), pattern="v2", vocab_size=VOCAB_SIZE, num_special_tokens=NUM_SPECIAL
    )


def test_megatron_tiktokenizer_round_trip(megatron_tokenizer) -> None:
    tok = megatron_tokenizer
    ids = tok.text_to_ids(SEED_PROMPT)
    assert 100 <= len(ids) <= 200
    assert tok.ids_to_text(ids) == SEED_PROMPT
    assert tok.vocab_size == VOCAB_SIZE
    assert tok.eod == 2
    assert all(NUM_SPECIAL <= i < VOCAB_SIZE for i in ids)
    # tiktoken itself round-trips any text ...
    assert tok.tokenizer.decode(tok.text_to_ids(TRICKY)) == TRICKY
    # ... but megatron-core 0.16.1's ids_to_text decodes token by token with
    # errors="replace": a character whose UTF-8 bytes span several tokens (all
    # non-ASCII here, the vocabulary has no multi-byte merges) becomes U+FFFD.
    ascii_text = TRICKY.encode("ascii", errors="ignore").decode("ascii")
    assert tok.ids_to_text(tok.text_to_ids(ascii_text)) == ascii_text


def test_tiktoken_chunks_like_make_vocab(megatron_tokenizer, corpus_text: str) -> None:
    # If our split differed from tiktoken's, encoding chunk by chunk would differ
    # from encoding the whole text somewhere in the corpus.
    enc = megatron_tokenizer.tokenizer
    for text in (corpus_text, TRICKY):
        by_chunk = [i for chunk in vocab.pretokenize(text) for i in enc.encode_ordinary(chunk)]
        assert by_chunk == enc.encode_ordinary(text)


def test_megatron_factory_builds_it() -> None:
    from megatron.core.tokenizers import MegatronTokenizer

    tok = MegatronTokenizer.from_pretrained(
        tokenizer_path=str(VOCAB),
        metadata_path={"library": "tiktoken"},
        pattern="v2",
        vocab_size=VOCAB_SIZE,
        num_special_tokens=NUM_SPECIAL,
    )
    ids = tok.tokenize(SEED_PROMPT)
    assert tok.detokenize(ids) == SEED_PROMPT
    assert tok.vocab_size == VOCAB_SIZE and tok.eod == 2
