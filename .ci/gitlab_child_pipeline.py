"""The child pipeline of .ci/gitlab-ci.yml: one job per `logitsmatch(<toolchain>)` session, then `collect`.

    python -m nox -l --json -s logitsmatch > sessions.json
    python .ci/gitlab_child_pipeline.py sessions.json > child-pipeline.yml

Run from the project root. Reads what `nox -l --json -s logitsmatch` lists (and each toolchain's Python from
pyproject.toml) and prints the child pipeline (JSON, which GitLab reads as YAML). Each toolchain job runs its
session and keeps results/ as an artifact, drift or not; the `matrix` job needs them all, merges them with
`logitsmatch collect` and writes `logitsmatch matrix`'s Markdown, JSON and PNG as its artifact. Standard library
only: it runs before anything is installed.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

SETUP = ["python -m pip install nox"]
COLLECT_IMAGE = "python:3.11"


def toolchain_pythons(pyproject: Path) -> dict[str, str]:
    """Each toolchain's Python version (its job runs in the official python:<version> image)."""
    toolchains = tomllib.loads(pyproject.read_text())["tool"]["logitsmatch"]["toolchains"]
    return {name: table["python"] for name, table in toolchains.items()}


def job_name(session: str) -> str:
    """A GitLab job name from a session name: `logitsmatch(py3.11-torch2.13.0-mcore0.16.1)` -> `run py3.11-...`."""
    inner = re.fullmatch(r"logitsmatch\((.+)\)", session)
    return f"run {inner.group(1) if inner else session}"


def child_pipeline(sessions: list[dict], pythons: dict[str, str]) -> dict:
    listed = {entry["session"]: entry["call_spec"]["toolchain"]
              for entry in sessions if entry.get("name") == "logitsmatch"}
    if not listed:
        raise SystemExit("gitlab_child_pipeline: nox lists no logitsmatch(<toolchain>) session")
    names = list(listed)
    pipeline: dict = {"stages": ["toolchains", "collect"]}
    for session, toolchain in listed.items():
        pipeline[job_name(session)] = {
            "stage": "toolchains",
            "image": f"python:{pythons[toolchain]}",
            "timeout": "2h",
            "script": [*SETUP, f'python -m nox -s "{session}"'],
            "artifacts": {"when": "always", "paths": ["results/"], "expire_in": "2 weeks"},
        }
    pipeline["matrix"] = {
        "stage": "collect",
        "image": COLLECT_IMAGE,
        "when": "always",
        "needs": [{"job": job_name(session), "artifacts": True} for session in names],
        "script": [
            'python -m pip install ".[plot]"',
            "logitsmatch collect results --into collected",
            "logitsmatch matrix --source collected --out matrix",
        ],
        "artifacts": {"when": "always", "paths": ["matrix/", "collected/"], "expose_as": "drift matrix"},
    }
    return pipeline


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gitlab_child_pipeline.py SESSIONS_JSON (the output of nox -l --json)", file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        sessions = json.load(handle)
    print(json.dumps(child_pipeline(sessions, toolchain_pythons(Path("pyproject.toml"))), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
