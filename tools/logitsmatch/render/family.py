"""docs/family/README.md, drawn from docs/family/coverage.json (``logitsmatch.family``)."""

from __future__ import annotations

from collections import Counter

from logitsmatch.family import STATUSES, Row

HEADER = """# The inference family: which of Megatron-LM's inference cases run here

Generated from [coverage.json](coverage.json) by `python scripts/family_coverage.py`; do not edit by hand
(`tests/house/test_family_coverage.py` keeps both in step with `../shared/megatron_inference_cases`).

One row per inference case folder of Megatron-LM at d98e8a64dd. **runs**: the case's model_config.yaml is
a suite here, unchanged, with a tiny sibling and goldens; `nox -s logitsmatch -t default -- family` runs them all
on the default toolchain (a case whose feature its megatron-core lacks, such as prefix caching before 0.17, is
refused with exit 4 and named), `-t newest` on the newest.
**runs-with-difference**: the same, and the reason names what the CPU profile does instead of what the case
asks. **cannot-run**: why not, either *needs CUDA* or *not yet built here*.

Every CPU run makes the same standing choices, which no row repeats: an fp32 reference (not bf16), gloo
ranks, megatron-core's local layer spec (not Transformer Engine), pure-torch attention for the flash path,
megatron-core's own RoPE (not flashinfer's), synthetic weights and logitsmatch's own vocabulary unless
CHECKPOINT_LOAD_PATH names Megatron's checkpoints.
"""


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|")


def coverage_markdown(rows: list[Row]) -> str:
    counts = Counter(row.status for row in rows)
    summary = ", ".join(f"{counts[status]} {status}" for status in STATUSES)
    lines = [HEADER, f"{len(rows)} cases: {summary}.", "", "| case | status | suite | tiny sibling | reason |",
             "|---|---|---|---|---|"]
    for row in rows:
        suite = f"`{row.suite}`" if row.suite else ""
        tiny = f"`{row.tiny}`" if row.tiny else ""
        lines.append(f"| `{row.case}` | {row.status} | {suite} | {tiny} | {_cell(row.reason)} |")
    return "\n".join(lines) + "\n"

