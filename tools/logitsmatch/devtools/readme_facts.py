"""The README's facts that go stale, rendered from the one place each is declared, and checked in CI.

A hand-written table of toolchains drifts from pyproject.toml (a GPU toolchain added and not listed, goldens
recorded and the column not updated), a session list from noxfile.py. So README.md keeps these blocks between
marker comments, and this module renders each from its source:

    toolchains   every toolchain of pyproject.toml (tags, CPU or GPU) and the goldens it has under golden_values/
    sessions     every session of noxfile.py with the first paragraph of its docstring (read with ast: no nox needed)
    exit-codes   errors.EXIT_CODE_TABLE, the table ``logitsmatch --help`` prints

    python -m logitsmatch.devtools.readme_facts --check   exit 1 naming each block that differs from its source
    python -m logitsmatch.devtools.readme_facts --write   rewrite the blocks in place

tests/devtools/test_readme_facts.py runs the check, so a change to a source without ``--write`` fails CI.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from logitsmatch.errors import EXIT_BAD_INPUT, EXIT_CODE_TABLE, EXIT_DRIFT, EXIT_OK, BadInput
from logitsmatch.files import write_atomic
from logitsmatch.paths import project_root
from logitsmatch.toolchains import default_toolchain_name, load_toolchains

SUITE_PREFIX, SUITE_SUFFIX = "gpt_dynamic_inference_", "_logitsmatch_zmq"
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) .*?-->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                    re.S)


def short_suite(name: str) -> str:
    """A suite's name without the prefix and suffix every shipped case shares (``tp8_pp1_dp1_tiny``)."""
    return name.removeprefix(SUITE_PREFIX).removesuffix(SUITE_SUFFIX)


def goldens_by_toolchain(project: Path, toolchains: list[str]) -> dict[str, dict[str, list[str]]]:
    """toolchain -> golden label (platform, with ``@class`` for a further hardware class) -> suites with one.

    Read from the file names under golden_values/ (``golden_values_<platform>_<toolchain>[@<class>].json``); a
    golden of no toolchain (Megatron's own ``golden_values_dev_dgx_h100.json``) belongs to no row."""
    found: dict[str, dict[str, list[str]]] = {name: {} for name in toolchains}
    for golden in sorted((project / "golden_values").glob("*/golden_values_*.json")):
        if golden.name.endswith(".provenance.json"):
            continue
        stem = golden.stem.removeprefix("golden_values_")
        plain, _, hardware_class = stem.partition("@")
        for name in toolchains:
            if plain.endswith(f"_{name}"):
                label = plain.removesuffix(f"_{name}") + (f"@{hardware_class}" if hardware_class else "")
                found[name].setdefault(label, []).append(golden.parent.name)
    return found


# Up to this many suites a row names them; beyond it, a count (the file names under golden_values/ list them).
_NAMED_AT_MOST = 6


def _suites_text(suites: list[str], every: list[str]) -> str:
    tiny = [name for name in every if "_tiny_" in name]
    if sorted(suites) == sorted(every):
        return f"every suite ({len(every)})"
    if sorted(suites) == sorted(tiny):
        return f"every tiny sibling ({len(tiny)})"
    if len(suites) > _NAMED_AT_MOST:
        siblings = sum("_tiny_" in name for name in suites)
        return f"{len(suites)} of {len(every)} suites ({siblings} of them tiny siblings)"
    return ", ".join(short_suite(name) for name in every if name in suites)


def toolchains_block(project: Path) -> str:
    """The toolchain table: one row per toolchain of pyproject.toml, in its order, with the goldens it has."""
    pyproject = project / "pyproject.toml"
    toolchains = load_toolchains(pyproject)
    default = default_toolchain_name(pyproject)
    every = sorted(path.parent.name for path in (project / "suites").glob("*/model_config.yaml"))
    goldens = goldens_by_toolchain(project, list(toolchains))
    gpu = [name for name, toolchain in toolchains.items() if toolchain.requires_gpu]
    lines = [f"{len(toolchains)} toolchains in `pyproject.toml`: {len(toolchains) - len(gpu)} run on the CPU, "
             f"{len(gpu)} only where a GPU is (`requires-gpu`); the default is `{default}`. "
             f"Goldens: per platform, which of the {len(every)} suites have one (named without "
             f"`{SUITE_PREFIX}` and `{SUITE_SUFFIX}`; beyond {_NAMED_AT_MOST}, counted: "
             f"`ls golden_values/*/golden_values_cpu_<toolchain>.json` names them).", "",
             "| toolchain | runs on | tags | goldens |", "|---|---|---|---|"]
    for name, toolchain in toolchains.items():
        by_suites: dict[str, list[str]] = {}
        for label, suites in goldens[name].items():
            by_suites.setdefault(_suites_text(suites, every), []).append(label)
        cell = "; ".join(f"{', '.join(labels)}: {text}" for text, labels in by_suites.items()) or "none"
        where = "GPU" if toolchain.requires_gpu else "CPU"
        lines.append(f"| `{name}` | {where} | {', '.join(toolchain.tags)} | {cell} |")
    return "\n".join(lines) + "\n"


def _is_session(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "session"


def _parametrized(decorators: list[ast.expr]) -> str | None:
    for decorator in decorators:
        if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "parametrize" and decorator.args
                and isinstance(decorator.args[0], ast.Constant)):
            return decorator.args[0].value
    return None


def sessions(noxfile: Path) -> list[tuple[str, str]]:
    """(session as ``nox -s`` names it, the first paragraph of its docstring) for every session of ``noxfile``."""
    try:
        tree = ast.parse(noxfile.read_text(), filename=str(noxfile))
    except (OSError, SyntaxError) as exc:
        raise BadInput(f"{noxfile}: cannot read its sessions ({exc})") from None
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(_is_session(d) for d in node.decorator_list):
            parameter = _parametrized(node.decorator_list)
            name = f"{node.name}(<{parameter}>)" if parameter else node.name
            doc = (ast.get_docstring(node) or "").split("\n\n")[0]
            found.append((name, " ".join(doc.split())))
    return found


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell (a ``|`` of a usage line would end the cell)."""
    return text.replace("|", "\\|")


def sessions_block(project: Path) -> str:
    rows = [f"| `{name}` | {_cell(doc)} |" for name, doc in sessions(project / "noxfile.py")]
    return "\n".join(["| session | what it does |", "|---|---|", *rows]) + "\n"


def exit_codes_block(project: Path) -> str:
    rows = [f"| {int(code)} | {text} |" for code, text in EXIT_CODE_TABLE.items()]
    return "\n".join(["| code | meaning |", "|---|---|", *rows]) + "\n"


BLOCKS = {"toolchains": toolchains_block, "sessions": sessions_block, "exit-codes": exit_codes_block}


def render(text: str, project: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block rendered anew, and the names of the blocks that changed.

    Every block of BLOCKS must be there exactly once: a missing or unknown marker is bad input."""
    seen, changed = [], []

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise BadInput(f"unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        seen.append(name)
        body = BLOCKS[name](project)
        if body != match["body"]:
            changed.append(name)
        return match.group(1) + body + match.group(4)

    rendered = _BLOCK.sub(fill, text)
    missing = [name for name in BLOCKS if seen.count(name) != 1]
    if missing:
        raise BadInput(f"README.md must hold each generated block once; not so for: {', '.join(missing)}")
    return rendered, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logitsmatch.devtools.readme_facts",
                                     description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 when a block differs from its source")
    action.add_argument("--write", action="store_true", help="rewrite the blocks from their sources")
    parser.add_argument("--readme", type=Path, help="the file holding the blocks (default: the project's README.md)")
    args = parser.parse_args(argv)
    project = project_root()
    readme = args.readme or project / "README.md"
    try:
        rendered, changed = render(readme.read_text(), project)
    except (BadInput, OSError) as exc:
        print(f"readme_facts: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.write:
        if changed:
            write_atomic(readme, rendered)
        print(f"{readme}: " + (f"rewrote {', '.join(changed)}" if changed else "up to date"))
        return EXIT_OK
    if changed:
        print(f"{readme}: generated block(s) out of date: {', '.join(changed)}; "
              "run python -m logitsmatch.devtools.readme_facts --write", file=sys.stderr)
        return EXIT_DRIFT
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
