"""Committed data names no folder of the machine that made it: the project runs on any machine."""

from __future__ import annotations

import sys
from pathlib import Path

from logitsmatch.rank.megatron_release import venv_relative
from support import PROJECT

DATA_FOLDERS = ("golden_values", "docs", "suites", "model_configs", "tests/data")


def test_goldens_and_docs_name_no_folder_of_this_machine():
    host = [str(PROJECT.resolve()), str(Path(sys.prefix).resolve()), str(Path.home())]
    found, read = [], {}
    for folder in DATA_FOLDERS:
        for path in (PROJECT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".json", ".md", ".txt", ".yaml", ".patch"):
                text = path.read_text(errors="replace")
                read[folder] = read.get(folder, 0) + 1
                found += [f"{path.relative_to(PROJECT)}: {prefix}" for prefix in host if prefix in text]
    assert set(read) == set(DATA_FOLDERS), f"no files read in {set(DATA_FOLDERS) - set(read)}"
    assert not found, found[:5]


def test_a_file_in_the_environment_is_named_relative_to_it():
    assert venv_relative(str(Path(sys.prefix) / "lib" / "x.py")) == "<venv>/lib/x.py"
    assert venv_relative("/elsewhere/megatron/core/__init__.py") == "/elsewhere/megatron/core/__init__.py"


def test_no_test_support_module_shadows_an_installed_package():
    """tests/support's scripts (perturb_checkpoint, record_megatron_verdicts) run with their folder first on
    sys.path: a module there named like a package they import (megatron, torch) would be imported instead."""
    import importlib.util

    from support import PROJECT

    names = sorted(path.stem for path in (PROJECT / "tests" / "support").glob("*.py") if path.stem != "__init__")
    assert "perturb_checkpoint" in names
    shadowing = [name for name in names if importlib.util.find_spec(name) is not None]
    assert shadowing == [], f"tests/support modules named like installed packages: {shadowing}"
