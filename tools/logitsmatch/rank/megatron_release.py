"""Which megatron-core release this process imports, and whether an adapter speaks it: read before any rank starts.

Apart from the adapters (``rank.adapters``), which this only chooses between: the harness asks for the release
without importing megatron.core, and provenance records the identity of what a rank did import.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from logitsmatch.errors import BadInput


def _version_tuple(text: str) -> tuple[int, int, int]:
    parts = [
        int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in text.split("+", maxsplit=1)[0].split(".")[:3]
    ]
    return tuple(parts + [0] * (3 - len(parts)))


def venv_relative(path: str) -> str:
    """``<venv>/lib/...`` for a file inside this interpreter's environment (the same on every machine,
    so provenance that becomes a golden names no host folder); any other path as it is (an overlay)."""
    import sys

    relative = os.path.relpath(path, sys.prefix)
    return path if relative.startswith(os.pardir) else f"<venv>/{relative}"


def megatron_identity() -> dict:
    """Which megatron-core this process imports: its own ``package_info`` version, the file, and the
    distribution metadata (which a PYTHONPATH overlay of a source tree does not change), plus the
    git commit when the installed tree says where it came from (PEP 610 ``direct_url.json``)."""
    import json

    import megatron.core
    from megatron.core import package_info

    identity = {"package_info_version": package_info.__version__, "file": venv_relative(megatron.core.__file__),
                "metadata_version": None, "commit": None}
    try:
        distribution = importlib.metadata.distribution("megatron-core")
        identity["metadata_version"] = distribution.version
        direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
        identity["commit"] = (direct_url.get("vcs_info") or {}).get("commit_id")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    return identity


def installed_megatron_version() -> tuple[int, int, int]:
    """The release of the megatron-core this process imports (``package_info``, not the dist metadata).

    Read from the ``megatron/core/package_info.py`` that ``import megatron.core`` would take (the
    first portion of the ``megatron`` namespace that has one), without importing megatron.core:
    that import costs seconds and the harness asks before any rank starts.
    """
    import importlib.util

    megatron = importlib.util.find_spec("megatron")
    for location in (megatron.submodule_search_locations or []) if megatron else []:
        if (Path(location) / "core" / "__init__.py").is_file():
            spec = importlib.util.spec_from_file_location("_megatron_package_info",
                                                          Path(location) / "core" / "package_info.py")
            package_info = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(package_info)
            return _version_tuple(package_info.__version__)
    raise BadInput("this venv has no megatron-core: run inside a toolchain venv (nox -s logitsmatch)")


DEVELOPMENT_MINOR = (0, 20)
"""What megatron-core's main branch calls itself since core_r0.19 branched (Megatron-LM d98e8a64dd: 0.20.0, no 0.20
release yet). ``logitsmatch watch`` follows main commit by commit, so its trees run through the newest adapter; a
commit whose API moved past it fails its run, and the watch lists it as unrunnable with that error."""


def check_supported(version: tuple[int, int, int]) -> None:
    """A release no adapter speaks is one clear line (BadInput), before anything runs."""
    if not ((0, 15) <= version[:2] <= (0, 19) or version[:2] == DEVELOPMENT_MINOR):
        raise BadInput(
            f"megatron-core {'.'.join(map(str, version))} is not supported "
            "(logitsmatch supports 0.15.x, 0.16.x, 0.17 to 0.19, and main's 0.20 development trees)"
        )


def coordinator_policies() -> tuple[str, ...]:
    """The data-parallel coordinator's prefix-caching routing policies (0.17+; 0.19 replaced round_robin
    by load_balanced)."""
    try:
        from megatron.core.inference.config import PrefixCachingCoordinatorPolicy
    except ImportError:
        return ()
    return tuple(policy.value for policy in PrefixCachingCoordinatorPolicy)


def has_offline_api() -> bool:
    """megatron-core's high-level API, MegatronLLM and MegatronAsyncLLM (0.18+), which Megatron-LM's offline
    driver runs."""
    try:
        from megatron.core.inference.apis import MegatronAsyncLLM, MegatronLLM  # noqa: F401
    except ImportError:
        return False
    return True
