"""Planted causes for explain's tests, built from what this venv has installed (no network, no mirror).

* ``package_overlay``: an installed distribution copied into a folder as a new version, with
  optional text edits (a decoy with a new version and no change, or a changed op).
* ``megatron_repo``: a small git repository of megatron-core's installed ``megatron/core`` tree:
  the release as the first commit (tagged ``core_v<version>``), then harmless commits, one of
  which (``planted_at``) changes one op.
* ``PLANTED_OP``: the op change: squared ReLU (the tiny GPT's activation, applied inside the MLP
  between linear_fc1 and linear_fc2, in no module of its own) scaled by (1 + 2^-20).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from logitsmatch.explain.environments import Side, link_or_copy, overlay, resolve

ACTIVATIONS = "megatron/core/activations.py"
PLANTED_OP = ("return torch.pow(F.relu(x), 2)", "return torch.pow(F.relu(x), 2) * (1.0 + 2.0**-20)")
# The first module whose output the planted op moves: the activation feeds linear_fc2 of layer 0.
PLANTED_MODULE = "decoder.layers.0.mlp.linear_fc2"


def installed(name: str) -> dict:
    return resolve(Side("here", sys.executable)).distributions[name]


def package_overlay(
    name: str, version_suffix: str, folder: Path, edits: dict[str, tuple[str, str]] | None = None
) -> Path:
    """``name`` as installed here, re-labelled ``<version>+<suffix>``, with ``edits`` applied (own copies)."""
    entry = installed(name)
    built = overlay(entry, folder / "cache")
    target = folder / f"{name}-{version_suffix}"
    shutil.copytree(built, target, copy_function=link_or_copy)
    info = next(target.glob("*.dist-info"))
    metadata = info / "METADATA"
    text = metadata.read_text()
    metadata.unlink()  # never write through a hard link into the venv
    metadata.write_text(
        text.replace(f"\nVersion: {entry['version']}\n", f"\nVersion: {entry['version']}+{version_suffix}\n", 1)
    )
    for relative, (old, new) in (edits or {}).items():
        path = target / relative
        source = path.read_text()
        assert old in source, f"{relative} has no {old!r}"
        path.unlink()
        path.write_text(source.replace(old, new, 1))
    return target


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin",
        },
    ).stdout


HARMLESS = (
    ("megatron/core/transformer/mlp.py", "\n# harmless 1: a comment\n", "docs: a comment in mlp.py"),
    ("megatron/core/models/gpt/gpt_model.py", "\n# harmless 2: a comment\n", "docs: a comment in gpt_model.py"),
    ("megatron/core/transformer/attention.py", "\n# harmless 3: a comment\n", "docs: a comment in attention.py"),
    (
        "megatron/core/inference/engines/dynamic_engine.py",
        "\n# harmless 4: a comment\n",
        "docs: a comment in dynamic_engine.py",
    ),
)


def megatron_repo(repo: Path, commits: int = 4, planted_at: int = 3) -> dict:
    """A repository of the installed megatron/core: tag core_v<version>, then ``commits`` commits,
    the ``planted_at``-th (1-based) changing the op; returns {"tag", "shas", "planted"}."""
    entry = installed("megatron-core")
    source = Path(entry["location"]) / "megatron" / "core"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(source, repo / "megatron" / "core", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"megatron-core {entry['version']} as installed")
    tag = f"core_v{entry['version'].split('+')[0]}"
    git(repo, "tag", tag)
    shas, harmless = [], iter(HARMLESS)
    for number in range(1, commits + 1):
        if number == planted_at:
            path = repo / ACTIVATIONS
            path.write_text(path.read_text().replace(*PLANTED_OP, 1))
            message = "Scale squared ReLU (the planted op change)"
        else:
            relative, text, message = next(harmless)
            with open(repo / relative, "a") as handle:
                handle.write(text)
        git(repo, "commit", "-q", "-am", message)
        shas.append(git(repo, "rev-parse", "HEAD").strip())
    return {"tag": tag, "shas": shas, "planted": shas[planted_at - 1]}


NUMPY_RANDOM = "numpy/random/__init__.py"
# A numpy whose normal stream differs by one ulp in every 7th value: the synthetic weights logitsmatch draws
# from it differ, and nothing else does (megatron-core's inference path draws no numpy random numbers).
PLANTED_NUMPY = '''

class _PlantedGenerator(Generator):  # planted by logitsmatch's explain tests
    def standard_normal(self, *args, **kwargs):
        import numpy as _np

        values = super().standard_normal(*args, **kwargs)
        flat = values.reshape(-1)
        flat[::7] = _np.nextafter(flat[::7], _np.asarray(_np.inf, dtype=values.dtype))
        return values


Generator = _PlantedGenerator
'''


def numpy_overlay(folder: Path) -> Path:
    """This venv's numpy, re-labelled ``+planted``, drawing 1-ulp-different normal numbers."""
    target = package_overlay("numpy", "planted", folder)
    path = target / NUMPY_RANDOM
    text = path.read_text()
    path.unlink()
    path.write_text(text + PLANTED_NUMPY)
    return target
