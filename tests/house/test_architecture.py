"""The package's shape is a checked contract: the torch boundary, no import cycles, layers, short subcommands.

* Only ``logitsmatch.rank`` may import torch or megatron-core at module level: every
  other module is imported in a fresh interpreter and neither may appear in sys.modules.
* No import cycles between modules, counting imports inside functions too.
* The base modules (``logitsmatch.<name>``) depend on no subpackage.
* ``judge`` (reading, comparing, reporting) and ``run`` (planning and launching a run) depend
  on the base modules only, so the harness never imports rank code, not even inside a function.
* ``explain`` depends on the base modules and ``judge`` (it runs suites as subprocesses).
* ``render`` (terminal text, Markdown and PNG of what judge decided) on the base modules and
  ``judge``; judge never imports render (the rule above), so deciding never depends on drawing.
* ``rank`` depends on the base modules and on ``run``'s contracts only (runfiles,
  synthetic_weights, ports); ``devtools`` on the base modules and ``run``.
* ``flows`` (the orchestration the subcommands start) may import the base modules, ``judge``,
  ``run``, ``explain``, ``render`` and ``devtools``, and ``rank`` only inside a function (never at module
  level); never ``cli``. Nothing below ``flows`` imports ``flows``: only ``cli`` does.
* ``cli`` may import every layer but ``rank`` (its subcommands reach rank code through ``flows``),
  and each of its modules is at most 200 lines: options and a short ``main``, the work in ``flows``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from support import PROJECT

PACKAGE = PROJECT / "tools" / "logitsmatch"
SUBPACKAGES = ("cli", "flows", "judge", "render", "run", "rank", "devtools", "explain")
CLI_MODULE_MAX_LINES = 200


def module_name(path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """logitsmatch modules ``name`` imports anywhere in its body (packages resolve to their modules)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    packages = {target for target in found if MODULES[target].name == "__init__.py"}
    # "from logitsmatch.run import launcher" names the package and the module; keep the module
    return {target for target in found if target not in packages or not any(t.startswith(target + ".") for t in found)}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_subpackages_exist():
    assert {name.split(".")[1] for name in MODULES if name.count(".") >= 1} >= set(SUBPACKAGES)


def test_no_module_outside_rank_imports_torch_or_megatron_at_import_time():
    harness = sorted(
        name for name in MODULES if not name.startswith("logitsmatch.rank") and not name.endswith("__main__")
    )
    assert len(harness) > 25
    probe = (
        "import importlib, json, sys\n"
        f"for name in {harness!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron'))))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT,
                               env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def test_rank_modules_are_the_ones_that_may_import_torch_at_module_level():
    """A top-level torch/megatron import outside rank/ fails here even where torch is installed."""
    assert len(MODULES) > 25
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("logitsmatch.rank"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name}: {m}" for m in modules if m.split(".")[0] in ("torch", "megatron")]
    assert offenders == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers():
    def subpackage(name: str) -> str | None:
        parts = name.split(".")
        return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else None

    for name, targets in GRAPH.items():
        if name.endswith("__main__"):  # the entry point: python -m logitsmatch
            continue
        layer = subpackage(name)
        used = {subpackage(target) for target in targets} - {None, layer}
        if layer is None:
            assert not used, f"base module {name} imports {used}"
        elif layer in ("judge", "run"):
            assert not used, f"{name} imports {used}"
        elif layer == "explain":
            assert used <= {"judge"}, f"{name} imports {used}"
        elif layer == "render":
            assert used <= {"judge"}, f"{name} imports {used}"
        elif layer == "rank":
            assert used <= {"run"}, f"{name} imports {used}"
            assert all(t in ("logitsmatch.run.runfiles", "logitsmatch.run.synthetic_weights", "logitsmatch.run.ports")
                       for t in targets if subpackage(t) == "run"), f"{name}: rank may use run's contracts only"
        elif layer == "devtools":
            assert used <= {"run"}, f"{name} imports {used}"
        elif layer == "flows":
            assert used <= {"judge", "render", "run", "explain", "devtools", "rank"}, f"{name} imports {used}"
        else:  # the subcommands: options and a short main over a flow
            assert layer == "cli", f"{name}: subpackage {layer} has no rule here"
            assert "rank" not in used, f"{name} imports rank: a subcommand reaches rank code through flows"


def module_level_imports(name: str) -> set[str]:
    """logitsmatch modules ``name`` imports at module level (not inside a function)."""
    found = set()
    for node in ast.parse(MODULES[name].read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {target for target in found if target in MODULES}


def test_flows_import_rank_only_inside_functions():
    flows = [name for name in MODULES if name.startswith("logitsmatch.flows")]
    assert flows
    offenders = {name: sorted(t for t in module_level_imports(name) if t.startswith("logitsmatch.rank"))
                 for name in flows}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_only_cli_imports_flows():
    importers = {name for name, targets in GRAPH.items() if any(t.startswith("logitsmatch.flows") for t in targets)}
    assert {name for name in importers if not name.startswith(("logitsmatch.cli", "logitsmatch.flows"))} == set()


def test_subcommand_modules_are_short():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    long = {name: lines for name, lines in lengths.items()
            if name.startswith("logitsmatch.cli") and lines > CLI_MODULE_MAX_LINES}
    assert long == {}, f"over {CLI_MODULE_MAX_LINES} lines (move the work into logitsmatch.flows): {long}"
