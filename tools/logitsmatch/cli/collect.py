"""`logitsmatch collect`: merge result trees from many machines (CI artifacts, Slurm job folders) into one.

The merged tree is keyed by suite, platform, toolchain and hardware class (see logitsmatch.collection);
`logitsmatch matrix --source DIR` tabulates it and `logitsmatch record --from DIR` records goldens from it.
"""

from __future__ import annotations

from pathlib import Path

from logitsmatch import paths
from logitsmatch.errors import EXIT_OK
from logitsmatch.log import logger

EXAMPLE = "logitsmatch collect artifacts/job-*/results --into results/collected"


def configure(parser) -> None:
    parser.add_argument(
        "sources", nargs="+", metavar="DIR", help="result trees (a results/ folder, or a folder holding them)"
    )
    parser.add_argument(
        "--into", required=True, metavar="DIR", help="the merged tree (created; added to when it exists)"
    )


def main(args) -> int:
    from logitsmatch.collection import collect
    from logitsmatch.run.plan import expected_weights

    project = paths.project_root()
    added = collect([Path(source) for source in args.sources], Path(args.into), project,
                    lambda suite: expected_weights(suite, project))
    for key, entry in added.items():
        logger.info(f"collected {key} from {entry['origin']}")
    classes = sorted({entry["hardware_class"] for entry in added.values()})
    print(f"collected {len(added)} result(s) into {args.into} (hardware classes: {', '.join(classes)})")
    return EXIT_OK
