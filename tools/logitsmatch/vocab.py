"""The small TikTokenizer vocabulary the suites ship, trained reproducibly (``logitsmatch make-vocab``).

Trains byte-level BPE merges, deterministically, on a text corpus and writes
them in the JSON format megatron-core's ``TikTokenTokenizer`` reads: a list of
``{"rank": i, "token_bytes": base64, "token_str": str}`` with rank == index and
entries 0-255 being the 256 single bytes in order.

Pre-tokenization uses tiktoken's "v2" split pattern, exactly the string
megatron-core passes to ``tiktoken.Encoding`` (``_PATTERN_TIKTOKEN_V2``).
That pattern uses ``\\p{..}`` classes, which the standard ``re`` module lacks,
so it is translated here into an equivalent ``re`` pattern with explicit
character classes built from ``unicodedata`` (no third-party dependency).
``tests/run/test_vocab.py`` checks the translation against the ``regex`` package
and against tiktoken itself where they are installed.

Training is standard greedy BPE: count adjacent pairs inside pre-tokenized
chunks (weighted by chunk frequency), merge the most frequent pair, repeat.
Ties are broken by the pair's bytes: (left token bytes, right token bytes),
smallest first. Every new token is the concatenation of two earlier tokens,
so tiktoken's rank-based BPE can reproduce it. Only stdlib is used, and the
output depends only on the corpus and the entry count.
"""

from __future__ import annotations

import base64
import functools
import heapq
import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path

from logitsmatch.errors import BadInput
from logitsmatch.files import read_input, read_text_input, write_atomic

# Verbatim copy of megatron-core's _PATTERN_TIKTOKEN_V2
# (megatron/core/tokenizers/text/libraries/tiktoken_tokenizer.py, 0.16.1).
PATTERN_TIKTOKEN_V2 = (
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+"
)

NUM_SPECIAL_TOKENS = 1000  # megatron-core's TikTokenTokenizer default
DEFAULT_ENTRIES = 1048  # 1000 + 1048 = 2048 = 2 x (128 x TP8)
MIN_PAIR_COUNT = 2  # a merge seen once means the corpus is too small

# Unicode White_Space (what \s means in tiktoken's fancy-regex); Python's own
# \s differs (it also matches U+001C..U+001F), so it is spelled out here.
_WHITE_SPACE = frozenset(
    [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


@functools.lru_cache(maxsize=1)
def _category_sets() -> dict[str, frozenset[int]]:
    by_cat: dict[str, list[int]] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        by_cat.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    sets = {cat: frozenset(cps) for cat, cps in by_cat.items()}
    for group in ("L", "N", "M"):
        sets[group] = frozenset().union(*(s for c, s in sets.items() if c[0] == group))
    return sets


def _class_body(codepoints: frozenset[int]) -> str:
    """Character-class body (no brackets) matching exactly ``codepoints``."""
    parts = []
    cps = sorted(codepoints)
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(f"\\U{cps[i]:08x}" if i == j else f"\\U{cps[i]:08x}-\\U{cps[j]:08x}")
        i = j + 1
    return "".join(parts)


def translate_pattern(pattern: str) -> str:
    """Rewrite a tiktoken pattern's ``\\p{X}``, ``\\s``, ``\\S`` for stdlib ``re``.

    Handles the subset of syntax the v1/v2 patterns use; anything else is
    passed through unchanged.
    """
    sets = _category_sets()

    def body(name: str) -> str:
        if name == "s":
            return _class_body(_WHITE_SPACE)
        if name not in sets:
            raise ValueError(f"unsupported Unicode class \\p{{{name}}}")
        return _class_body(sets[name])

    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1]
            if nxt == "p":
                end = pattern.index("}", i)
                name = pattern[i + 3 : end]
                out.append(body(name) if in_class else f"[{body(name)}]")
                i = end + 1
                continue
            if nxt == "s":
                out.append(body("s") if in_class else f"[{body('s')}]")
            elif nxt == "S":
                if in_class:
                    raise ValueError("\\S inside a character class is not supported")
                out.append(f"[^{body('s')}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            if pattern[i + 1] == "^":
                out.append("^")
                i += 1
        elif ch == "]" and in_class:
            in_class = False
            out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1)
def _splitter() -> re.Pattern[str]:
    return re.compile(translate_pattern(PATTERN_TIKTOKEN_V2))


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into chunks exactly as tiktoken does with the v2 pattern."""
    return _splitter().findall(text)


def train_bpe(text: str, n_entries: int) -> list[bytes]:
    """Return ``n_entries`` token byte strings: 256 single bytes, then BPE merges in order."""
    if n_entries < 256:
        raise BadInput(f"--entries must be at least 256 (the single bytes), got {n_entries}")
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    index: dict[bytes, int] = {tok: i for i, tok in enumerate(vocab)}

    chunk_counts = Counter(pretokenize(text))
    words: list[list[int]] = []
    freqs: list[int] = []
    for chunk, freq in chunk_counts.items():
        ids = list(chunk.encode("utf-8"))
        if len(ids) >= 2:
            words.append(ids)
            freqs.append(freq)

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + freq
            where.setdefault(pair, set()).add(w)

    # Max-heap on count, ties by (left bytes, right bytes) ascending; stale
    # entries (count no longer current) are skipped when popped.
    heap = [(-c, vocab[a], vocab[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < n_entries:
        while heap:
            neg, _, _, a, b = heapq.heappop(heap)
            if pair_counts.get((a, b)) == -neg:
                break
        else:
            neg = 0
        if -neg < MIN_PAIR_COUNT:
            raise BadInput(
                f"corpus too small: no pair occurs {MIN_PAIR_COUNT}+ times after "
                f"{len(vocab) - 256} merges ({n_entries - 256} wanted); use a larger corpus"
            )
        merged = vocab[a] + vocab[b]
        new = index.get(merged)
        if new is None:  # the same bytes can arise from two splits; keep one id
            new = len(vocab)
            vocab.append(merged)
            index[merged] = new

        touched: set[tuple[int, int]] = set()
        for w in where.pop((a, b)):
            ids = words[w]
            out: list[int] = []
            j = 0
            while j < len(ids):
                if j + 1 < len(ids) and ids[j] == a and ids[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(ids[j])
                    j += 1
            if len(out) == len(ids):
                continue  # stale index entry: the pair is gone from this word
            freq = freqs[w]
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] -= freq
                touched.add(pair)
            for pair in zip(out, out[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + freq
                where.setdefault(pair, set()).add(w)
                touched.add(pair)
            words[w] = out
        for pair in touched:
            count = pair_counts[pair]
            if count > 0:
                heapq.heappush(heap, (-count, vocab[pair[0]], vocab[pair[1]], *pair))
            else:
                del pair_counts[pair]
                where.pop(pair, None)
    return vocab


def render_vocab(tokens: list[bytes]) -> bytes:
    """The vocabulary file's exact bytes: one JSON object per line, ASCII only."""
    if len(set(tokens)) != len(tokens):
        raise BadInput("vocabulary has duplicate tokens")
    if any(tokens[i] != bytes([i]) for i in range(min(256, len(tokens)))) or len(tokens) < 256:
        raise BadInput("vocabulary must start with the 256 single bytes in order")
    lines = [
        json.dumps(
            {
                "rank": rank,
                "token_bytes": base64.b64encode(tok).decode("ascii"),
                "token_str": tok.decode("utf-8", errors="replace"),
            },
            ensure_ascii=True,
        )
        for rank, tok in enumerate(tokens)
    ]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode("ascii")


def write_vocab(path: str | os.PathLike[str], tokens: list[bytes], force: bool = False) -> bool:
    """Atomically write the vocabulary; return False if the file was already identical.

    Refuses (BadInput) to replace an existing, different file unless ``force``, and anything
    but a regular file (a folder, a FIFO) at ``path``.
    """
    path = Path(path)
    data = render_vocab(tokens)
    if path.exists() or path.is_symlink():
        if read_input(path, "vocabulary file") == data:
            return False
        if not force:
            raise BadInput(f"{path} exists and differs; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise BadInput(f"output directory {path.parent} does not exist")
    write_atomic(path, data)
    return True


def read_corpus(path: str | os.PathLike[str]) -> str:
    """The training text: a regular UTF-8 file within the input cap."""
    return read_text_input(path, "corpus file")


def load_decoder(path: str | os.PathLike[str], num_special_tokens: int = NUM_SPECIAL_TOKENS):
    """Token ids -> text as megatron-core's TikTokenTokenizer detokenizes them, in pure Python (no tiktoken):
    id i >= ``num_special_tokens`` is the bytes of vocabulary entry i - ``num_special_tokens``; a smaller id is a
    special token, shown as ``<special i>``; bytes that are not UTF-8 (a character cut at the edge) as U+FFFD."""
    try:
        entries = json.loads(read_input(path, "tokenizer vocabulary"))
        table = [base64.b64decode(entry["token_bytes"], validate=True) for entry in entries]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise BadInput(f"{path} is not a TikToken vocabulary (a JSON list of {{token_bytes: base64}}): {exc}") from None

    def decode(ids: list[int]) -> str:
        out, pending = [], b""
        for token in ids:
            if num_special_tokens <= token < num_special_tokens + len(table):
                pending += table[token - num_special_tokens]
                continue
            out.append(pending.decode("utf-8", errors="replace") + f"<special {token}>")
            pending = b""
        return "".join(out) + pending.decode("utf-8", errors="replace")

    return decode
