"""`logitsmatch verify`: every golden against its provenance sidecar, as one record (see golden_pairs).

A golden replaced by hand, a sidecar from another recording, or a sidecar of the wrong shape is named
with the commands that repair it; an interrupted `record` is finished or undone on the way.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_OK

EXAMPLE = "logitsmatch verify golden_values/gpt_dynamic_inference_tp8_pp1_dp1_tiny_logitsmatch_zmq"


def configure(parser) -> None:
    parser.add_argument("folders", nargs="*", metavar="DIR",
                        help="folders of goldens to check (default: the project's golden_values/)")


def main(args) -> int:
    from logitsmatch.errors import BadInput
    from logitsmatch.golden_pairs import goldens_under, verify
    from logitsmatch.paths import provenance_path

    folders = [Path(folder) for folder in args.folders] or [paths.project_root() / "golden_values"]
    for folder in folders:
        if not folder.is_dir():
            raise BadInput(f"{folder} is not a folder")
    goldens = [golden for folder in folders for golden in goldens_under(folder)]
    problems = {golden: verify(golden) for golden in goldens}
    for golden, problem in problems.items():
        if problem:
            print(f"  NOT ONE RECORD  {golden}: {problem}")
    bad = sum(1 for problem in problems.values() if problem)
    unrecorded = sum(1 for golden in goldens if not provenance_path(golden).exists())
    print(f"verified {len(goldens)} golden(s): {len(goldens) - bad - unrecorded} one record with their sidecar, "
          f"{unrecorded} without a sidecar (not recorded by logitsmatch), {bad} not one record")
    if bad:
        raise BadInput(f"{bad} golden(s) not one record with their sidecar (listed above)")
    return EXIT_OK
