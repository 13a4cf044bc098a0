"""The shipped vocabulary's files and the texts its tests tokenize (tests/run/test_vocab.py and
tests/inference/test_megatron_tokenizer.py)."""

from __future__ import annotations

from support import PROJECT

TOKENIZER_DIR = PROJECT / "model_configs" / "tokenizer"
CORPUS = TOKENIZER_DIR / "corpus.txt"
VOCAB = TOKENIZER_DIR / "logitsmatch-bpe-2048.vocab.json"
NUM_SPECIAL = 1000
VOCAB_SIZE = 2048
SEED_PROMPT = (
    "Time travel to 2008, and go to a bar or a club or one of the myriad disco-basements on "
    "the Lower East Side that does not quite know which of those it is. Dance awkwardly in a "
    "room full of other glittered-up nerds, and wait for something to happen, buoyed on the "
    "feeling that this is the big swollen heart of life, that this is New York like the movies."
)
# Strings that exercise every branch of the v2 split pattern and Unicode corners.
TRICKY = (
    "Hello, World! It's 2008 -- x\u00a0y\u2003z \x1c\x1d a\u0301b \u00c9COLE \u00e9cole "
    "\u01c4x \u01c5a 12345 \u0661\u0662 \u216b \u00bd 'll  \n\n  \n  hi/\n/ ?? !!\r\n\r\n "
    "\U0001f642\U0001f642 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 ...  \u200b \ufeff\t\t\n"
)
