"""Write model_configs/prompts/sharegpt_vicuna_standin.jsonl: the stand-in for ShareGPT-Vicuna.

Several of Megatron-LM's inference cases read their prompts from
``${DATA_PATH}/text/sharegpt-vicuna/filtered/processed.jsonl``, a data set this project does not have.
Their suites read this file instead (their logitsmatch.yaml names it as ``prompt_file``): JSON lines of
the same shape, ``{"text": ..., "chatgpt_output_token_length": ...}``, made here from a fixed word list
by ``random.Random(SEED)``, so that the same script writes the same bytes on any machine. Its prompts are
user turns of a chat, 6 to 40 words: far shorter than ShareGPT's (Megatron-LM's golden of
gpt_dynamic_inference_tp1_pp1_583m_logitsmatch opens with a 3026-character prompt), so that 128 of them
prefill on a CPU host.

    python scripts/sharegpt_standin.py           # writes the file
    python scripts/sharegpt_standin.py --check   # exit 1 if the committed file is not what it writes
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20260407
COUNT = 160  # more than the cases' --prompt-file-num-truncate 128, so that the truncation is exercised
OUTPUT = Path(__file__).resolve().parents[1] / "model_configs" / "prompts" / "sharegpt_vicuna_standin.jsonl"

OPENINGS = (
    "Can you explain", "Write a short story about", "What is the difference between", "Give me three ideas for",
    "Summarize the history of", "How do I fix", "Translate into plain English", "Describe step by step",
    "Why does", "Help me plan",
)
SUBJECTS = (
    "the river", "a small bakery", "the old library", "machine learning", "a rainy afternoon", "the city council",
    "my garden", "a chess opening", "the first computers", "a mountain village", "the night market",
    "an email to my manager", "the solar system", "a birthday party", "the train schedule", "a new recipe",
)
VERBS = (
    "changes", "grows", "works", "starts", "fails", "moves", "looks", "sounds", "matters", "begins",
)
TAILS = (
    "in the winter", "for a beginner", "without any jargon", "in under a hundred words", "with an example",
    "as a list", "for a child", "when the power is out", "on a tight budget", "over the weekend",
)


def prompt(rng: random.Random) -> str:
    """One user turn: an opening, then clauses until it holds 6 to 40 words."""
    words = [*rng.choice(OPENINGS).split(), *rng.choice(SUBJECTS).split()]
    wanted = rng.randint(6, 40)
    while len(words) < wanted:
        words += [*rng.choice(("and", "because", "while", "so")).split(), *rng.choice(SUBJECTS).split(),
                  rng.choice(VERBS), *rng.choice(TAILS).split()]
    return " ".join(words[:wanted]).rstrip(",") + rng.choice(("?", ".", "?", "!"))


def standin() -> str:
    """The file's text, COUNT lines."""
    rng = random.Random(SEED)
    lines = [json.dumps({"text": prompt(rng), "chatgpt_output_token_length": rng.randint(16, 512)})
             for _ in range(COUNT)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the committed file, write nothing")
    args = parser.parse_args(argv)
    text = standin()
    if args.check:
        same = OUTPUT.is_file() and OUTPUT.read_text() == text
        print(f"{OUTPUT}: {'as generated' if same else 'differs from what this script writes'}")
        return 0 if same else 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({COUNT} prompts, seed {SEED})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
