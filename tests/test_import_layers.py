"""The layers of lora_tui/core hold, imports inside functions included (issue 18 item 2).

The walker reads every module of core with ``ast`` and records each import with its file and line,
whether at module top or inside a function (the "import torch lazily" habit must not hide a cycle).
Relative imports and ``from lora_tui.core import x`` / ``from lora_tui.core.train import engine``
are resolved to the module they load. Imports under ``if TYPE_CHECKING:`` are left out: they never
run, so they cannot make an import cycle (core has none today).

Modules imported by name (``importlib.import_module``, ``__import__``) are edges too (issue 27 item 6):
a literal name is read as it stands; a name built at run time can be any module of the package that the
same module names in a string (``"lora_tui.x.y"`` or ``"lora_tui.x.y:function"``, the way a table of
writers names them), or that ``loaded_by_name()`` declares for it, asking the table kept elsewhere (the
CLI's ``command_module``, the wizard's ``STEPS``). A by-name load resolved neither way is an edge to
``UNRESOLVED``, and a test fails on it, so the layer rules never miss one.

Nodes: each sub-package of core (``train``, ``export``, ...) is one node, and each base module at
core's top (``config``, ``units``, ...) is its own node. The tests fail on a cycle between nodes,
on a cycle between modules (of core, and of the whole package), on core importing the UI, the commands
or the CLI, and on a front end (cli, commands, ui, core: the README's code map) importing one above it.

``python3 tests/test_import_layers.py`` prints the sub-package map (``layer_map()``) and the front ends'
(``front_map()``); the README's "Code map" must name every node of core and allow every import it makes.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "lora_tui"
CORE = "lora_tui.core"
FORBIDDEN = ("lora_tui.ui", "lora_tui.commands", "lora_tui.cli")
UNRESOLVED = "<a module named at run time>"


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (the deepest module that exists)
    path: Path
    line: int
    in_function: bool
    by_name: bool = False  # importlib.import_module / __import__, not an import statement

    def where(self) -> str:
        path = self.path.relative_to(PACKAGE_ROOT.parent) if self.path.is_relative_to(PACKAGE_ROOT.parent) else self.path
        return f"{path}:{self.line}{' (in a function)' if self.in_function else ''}{' (by name)' if self.by_name else ''}"


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _loads_by_name(node: ast.AST) -> bool:
    """``importlib.import_module(...)``, ``import_module(...)`` or ``__import__(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _imports_in(tree: ast.Module):
    """(node, in_function) for every import (statement or by-name call) that can run, skipping
    `if TYPE_CHECKING:` bodies."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _loads_by_name(node):
            yield node, in_function
            continue
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse  # the TYPE_CHECKING body never runs
        else:
            children = list(ast.iter_child_nodes(node))
        stack.extend((child, inside) for child in children)


def import_edges(package_dir: Path, scope: str | None = None,
                 by_name: Mapping[str, Iterable[str]] | None = None) -> list[Import]:
    """Every import made by the modules under ``scope`` (dotted; default: the whole package) of the
    package at ``package_dir``, each resolved to the module it loads. Imports of modules outside the
    package are kept only when they name the package's own top (e.g. ``lora_tui.ui``).
    ``by_name``: module -> the modules it imports by a name built at run time (``loaded_by_name()``)."""
    by_name = by_name or {}
    files = {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    top = package_dir.name
    scope = scope or top

    def deepest(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    out: list[Import] = []
    for module, path in files.items():
        if module != scope and not module.startswith(scope + "."):
            continue
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        named_here = sorted({node.value.partition(":")[0] for node in ast.walk(tree) if isinstance(node, ast.Constant)
                             and isinstance(node.value, str) and node.value.partition(":")[0] in files})
        for node, in_function in _imports_in(tree):
            loaded_by_name = isinstance(node, ast.Call)
            if loaded_by_name:
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names = [first.value]  # a literal name reads as an import statement would
                elif named_here or module in by_name:
                    names = named_here + sorted(by_name.get(module, ()))
                else:
                    out.append(Import(module, UNRESOLVED, path, node.lineno, in_function, by_name=True))
                    continue
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                # `from pkg import x` loads pkg.x when x is a module, else pkg itself
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            targets = {deepest(name) for name in names if name == top or name.startswith(top + ".")}
            out += [Import(module, target, path, node.lineno, in_function, loaded_by_name)
                    for target in sorted(targets - {None, module})]
    return out


def loaded_by_name() -> dict[str, set[str]]:
    """The modules lora_tui imports by a name built at run time, asked of the tables the names come from:
    the CLI imports the module of the command given (``command_module``), the app each step's screen."""
    from lora_tui.cli import COMMANDS, command_module
    from lora_tui.ui.steps import STEPS

    return {"lora_tui.cli": {command_module(command) for command in COMMANDS},
            "lora_tui.ui.app": {step.module for step in STEPS}}


@functools.lru_cache(maxsize=None)
def edges(scope: str | None = None) -> tuple[Import, ...]:
    """``import_edges`` of lora_tui (under ``scope``), its by-name imports resolved; read once per session."""
    return tuple(import_edges(PACKAGE_ROOT, scope, loaded_by_name()))


def node_of(module: str, scope: str = CORE) -> str | None:
    """The layer node of a module: its sub-package of ``scope``, or the base module itself."""
    if module == scope:
        return scope.rpartition(".")[2]
    if not module.startswith(scope + "."):
        return None
    return module[len(scope) + 1:].split(".")[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    nodes = sorted(set(edges) | {t for targets in edges.values() for t in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def graphs(imports: list[Import], scope: str = CORE) -> tuple[dict, dict, dict]:
    """(module graph, node graph, imports behind each node edge)."""
    modules: dict[str, set[str]] = defaultdict(set)
    nodes: dict[str, set[str]] = defaultdict(set)
    behind: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        a, b = node_of(imp.source, scope), node_of(imp.target, scope)
        if a is None or b is None:
            continue
        modules[imp.source].add(imp.target)
        if a != b:
            nodes[a].add(b)
            behind[(a, b)].append(imp)
    return modules, nodes, behind


def describe_cycle(members: list[str], behind: dict) -> str:
    lines = [f"cycle between {', '.join(members)}:"]
    for (a, b), imps in sorted(behind.items()):
        if a in members and b in members:
            lines.append(f"  {a} -> {b}")
            lines += [f"      {imp.where()}  {imp.source} imports {imp.target}" for imp in imps]
    return "\n".join(lines)


def _marked(target: str, imports: list[Import]) -> str:
    """``target`` with * when every import behind the edge is inside a function, and "(by name)" when each is."""
    return (target + ("*" if all(imp.in_function for imp in imports) else "")
            + (" (by name)" if all(imp.by_name for imp in imports) else ""))


def layer_map(package_dir: Path = PACKAGE_ROOT, scope: str = CORE) -> str:
    """The sub-package graph, lowest floor first: each node, its floor, and what it imports."""
    by_name = loaded_by_name() if package_dir == PACKAGE_ROOT else None
    _, nodes, behind = graphs(import_edges(package_dir, scope, by_name), scope)
    everything = sorted(set(nodes) | {t for ts in nodes.values() for t in ts}
                        | {node_of(_module_name(p, package_dir), scope) for p in (package_dir / scope.split(".", 1)[1]).rglob("*.py")
                           if _module_name(p, package_dir) != scope})
    loops = cycles(nodes)
    group = {m: "{" + ", ".join(c) + "}" for c in loops for m in c}  # a cycle's members share one floor
    floors: dict[str, int] = {}

    def floor(node: str) -> int:  # 0 for a node importing nothing of core, else one above its highest import
        key = group.get(node, node)
        if key not in floors:
            floors[key] = 0
            members = [m for m in everything if group.get(m, m) == key]
            floors[key] = 1 + max((floor(t) for m in members for t in nodes.get(m, ()) if group.get(t, t) != key),
                                  default=-1)
        return floors[key]

    lines = ["floor  node: what it imports (* only inside functions)"]
    for node in sorted(everything, key=lambda n: (floor(n), n)):
        targets = [_marked(t, behind[(node, t)]) for t in sorted(nodes.get(node, ()))]
        lines.append(f"{floor(node):>5}  {node}: {', '.join(targets) or '-'}"
                     + (f"  CYCLE {group[node]}" if node in group else ""))
    return "\n".join(lines)


README = PACKAGE_ROOT.parent / "README.md"
OUTSIDE_THE_MAP = ("lora_tui", "lora_tui.__main__")  # the version every layer may read; `python -m lora_tui`


def readme_front_ends(readme: Path = README) -> list[str]:
    """The layers the README's "Code map" lists above core's table, highest first, as dotted names
    (lora_tui/cli.py -> lora_tui.cli): each may import only itself and those below it."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    rows = []
    for line in lines[lines.index("## Code map"):]:
        if line.startswith("| package |"):
            break
        found = re.match(r"    (lora_tui/\S+)\s", line)
        if found:
            rows.append(found.group(1).removesuffix(".py").strip("/").replace("/", "."))
    return rows


def front_end_of(module: str, rows: list[str]) -> str | None:
    return next((row for row in rows if module == row or module.startswith(row + ".")), None)


def upward_imports(imports: list[Import], rows: list[str]) -> list[Import]:
    """The imports of a layer (``rows``, highest first) that name a layer above it."""
    rank = {row: index for index, row in enumerate(rows)}
    bad = []
    for imp in imports:
        layer = front_end_of(imp.source, rows)
        if layer is None or imp.target == "lora_tui":  # outside the map, or the package's version
            continue
        target = front_end_of(imp.target, rows)
        if target is None or rank[target] < rank[layer]:  # __main__, an unresolved name, or a layer above
            bad.append(imp)
    return bad


def front_map(rows: list[str] | None = None) -> str:
    """The front ends, highest first: the other layers each imports, then the modules it imports by name."""
    rows = rows or readme_front_ends()
    behind: dict[tuple[str, str], list[Import]] = defaultdict(list)
    by_name: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(lambda: defaultdict(set))
    for imp in edges():
        layer = front_end_of(imp.source, rows)
        if layer is None:
            continue
        target = front_end_of(imp.target, rows) or imp.target
        if target != layer:
            behind[(layer, target)].append(imp)
        if imp.by_name:
            package, _, leaf = imp.target.rpartition(".")
            by_name[layer][(imp.source, package)].add(leaf)
    lines = ["front end: what it imports (* only inside functions)"]
    for row in rows:
        lines.append(f"  {row}: {', '.join(_marked(b, imps) for (a, b), imps in sorted(behind.items()) if a == row) or '-'}")
        lines += [f"      by name: {source} -> {package}.{{{', '.join(sorted(leaves))}}}"
                  for (source, package), leaves in sorted(by_name[row].items())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the tests
def test_no_cycle_between_sub_packages():
    _, nodes, behind = graphs(edges(CORE))
    found = cycles(nodes)
    assert not found, "\n" + "\n".join(describe_cycle(c, behind) for c in found)


@pytest.mark.parametrize("scope", [CORE, "lora_tui"])
def test_no_cycle_between_modules(scope):
    """Of core, and of the whole package: there a screen importing the app would close a loop with the
    app's by-name import of the screens."""
    imports = edges(scope)
    modules, _, _ = graphs(imports, scope)
    found = cycles(modules)
    lines = []
    for members in found:
        lines.append(f"cycle between {', '.join(members)}:")
        lines += [f"  {imp.where()}  {imp.source} imports {imp.target}" for imp in imports
                  if imp.source in members and imp.target in members]
    assert not found, "\n" + "\n".join(lines)


def test_core_never_imports_the_ui_the_commands_or_the_cli():
    bad = [imp for imp in edges(CORE) if imp.target.startswith(FORBIDDEN)]
    assert not bad, "\n".join(f"{imp.where()}  {imp.source} imports {imp.target}" for imp in bad)


BASE = ("units", "paths", "disk", "safe_read")


def readme_code_map(readme: Path = README) -> list[tuple[list[str], set[str]]]:
    """The README's core table as (nodes of a row, nodes that row may import), rows lowest first.
    The imports column reads: 'base' (the four base modules), names, 'everything above [but X]',
    'the standard library' / 'nothing of ours' (no node of core)."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = lines.index("| package | owns | imports |") + 2
    rows, above = [], []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        first, _, allowed = [cell.strip() for cell in line.strip("|").split("|")]
        names = [n.strip("`/ ") for n in first.replace("base:", "").split(",")]
        names = [n for part in names for n in part.replace("`", "").split()]
        may: set[str] = set()
        if allowed.startswith("everything above"):
            may = set(above) - {n.strip() for n in allowed.partition(" but ")[2].split(",") if n.strip()}
        else:
            for word in (w.strip() for w in allowed.split(",")):
                may |= set(BASE) if word == "base" else set() if " " in word else {word}
        rows.append((names, may))
        above += names
    return rows


def test_readme_code_map_names_every_sub_package_and_its_imports():
    """The README's "Code map" is the import graph as it is: every node of core in one row, and no
    node importing a node its row does not name."""
    _, nodes, behind = graphs(edges(CORE))
    rows = readme_code_map()
    listed = [n for names, _ in rows for n in names]
    present = {node_of(m) for m in (imp.source for imp in edges(CORE))} - {"core", None}
    present |= {p.stem if p.is_file() else p.name for p in (PACKAGE_ROOT / "core").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert sorted(listed) == sorted(present), "README code map rows vs lora_tui/core"
    wrong = [f"{node} -> {target}: {behind[(node, target)][0].where()}"
             for names, may in rows for node in names for target in sorted(nodes.get(node, ())) if target not in may]
    assert not wrong, "imports the README's code map does not allow:\n" + "\n".join(wrong)


def test_every_import_by_name_is_resolved():
    """A module imported by a name built at run time is invisible to the rules above until
    ``loaded_by_name()`` says which modules the name can be."""
    unresolved = [imp for imp in edges() if imp.target == UNRESOLVED]
    assert not unresolved, "imports by name the walker cannot see; add them to loaded_by_name():\n" + "\n".join(
        f"{imp.where()}  {imp.source}" for imp in unresolved)


def test_the_cli_and_the_app_import_by_name_what_their_tables_name():
    """The edges the README's code map draws (cli -> commands, app -> each step's screen) are in the
    import map, and each name loads what its table says: a module with the command's run(), a screen
    class that shows its step."""
    import importlib

    from lora_tui.cli import COMMANDS, command_module
    from lora_tui.ui.screens.base import WizardScreen
    from lora_tui.ui.steps import STEP_NAMES, STEPS

    found = {(imp.source, imp.target) for imp in edges() if imp.by_name}
    assert {("lora_tui.cli", command_module(c)) for c in COMMANDS} <= found
    assert {("lora_tui.ui.app", step.module) for step in STEPS} <= found
    for command in COMMANDS:
        assert callable(importlib.import_module(command_module(command)).run), command
    for step in STEPS:
        screen = getattr(importlib.import_module(step.module), step.screen)
        assert issubclass(screen, WizardScreen) and screen.STEP == step.name, step
    assert len(set(STEP_NAMES)) == len(STEPS)


def test_front_ends_import_only_the_layers_below_them():
    """cli, commands, ui, core as the README's code map lists them, by-name imports included; every
    module of the package is in one of them."""
    rows = readme_front_ends()
    assert rows[-1] == CORE, rows
    imports = edges()
    unplaced = sorted({imp.source for imp in imports} - set(OUTSIDE_THE_MAP)
                      - {m for m in (imp.source for imp in imports) if front_end_of(m, rows)})
    assert not unplaced, f"modules in no row of the README's code map: {unplaced}"
    bad = upward_imports(imports, rows)
    assert not bad, "imports of a layer above (README code map order: " + " > ".join(rows) + "):\n" + "\n".join(
        f"{imp.where()}  {imp.source} imports {imp.target}" for imp in bad)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walker_sees_cycles_hidden_in_functions(tmp_path):
    """A tiny package: core/low imports core/high only inside a function, through each import form."""
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/ui.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/config.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.core.high import job\n",
        "pkg/core/low/__init__.py": "",
        "pkg/core/low/base.py": "def f():\n    from pkg.core.high import job\n    return job\n",
        "pkg/core/low/other.py": "def g():\n    from ..high import job\n    from pkg.core import config\n",
        "pkg/core/high/__init__.py": "",
        "pkg/core/high/job.py": "from pkg.core.low import base\nimport pkg.core.low.other\n\n"
                                "class A:\n    def m(self):\n        from pkg import ui\n",
    })
    imports = import_edges(pkg, "pkg.core")
    found = {(i.source, i.target, i.line, i.in_function) for i in imports}
    assert ("pkg.core.low.base", "pkg.core.high.job", 2, True) in found  # absolute, in a function
    assert ("pkg.core.low.other", "pkg.core.high.job", 2, True) in found  # relative
    assert ("pkg.core.low.other", "pkg.core.config", 3, True) in found  # `from package import module`
    assert ("pkg.core.high.job", "pkg.core.low.other", 2, False) in found  # `import a.b.c`
    assert ("pkg.core.high.job", "pkg.ui", 6, True) in found  # in a method
    assert not any(i.source == "pkg.core.config" for i in imports)  # TYPE_CHECKING is left out

    modules, nodes, behind = graphs(imports, "pkg.core")
    assert cycles(nodes) == [["high", "low"]]
    assert cycles(modules) == [["pkg.core.high.job", "pkg.core.low.base", "pkg.core.low.other"]]
    message = describe_cycle(["high", "low"], behind)
    assert f"{pkg / 'core' / 'low' / 'base.py'}:2 (in a function)" in message
    assert "low -> high" in message and "high -> low" in message


def test_the_walker_finds_no_cycle_where_arrows_point_one_way(tmp_path):
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/units.py": "",
        "pkg/core/low/__init__.py": "from . import base\n",
        "pkg/core/low/base.py": "from pkg.core import units\n",
        "pkg/core/high/__init__.py": "",
        "pkg/core/high/job.py": "def f():\n    from pkg.core.low import base\n",
    })
    _, nodes, _ = graphs(import_edges(pkg, "pkg.core"), "pkg.core")
    assert nodes == {"low": {"units"}, "high": {"low"}}
    assert cycles(nodes) == []
    text = layer_map(pkg, "pkg.core")
    assert "0  units: -" in text and "1  low: units" in text and "2  high: low*" in text


def test_the_walker_sees_imports_by_name(tmp_path):
    """A literal name is read as it stands, a run-time name through the declaration, and a run-time
    name without one is an unresolved edge; a by-name edge breaks a layer rule like an import does."""
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/cli.py": "import importlib\nTABLE = {'go': 'low'}\n\ndef main(c):\n"
                      "    return importlib.import_module(f'pkg.commands.{TABLE[c]}')\n",
        "pkg/commands/__init__.py": "",
        "pkg/commands/low.py": "",
        "pkg/ui/__init__.py": "",
        "pkg/ui/app.py": "from importlib import import_module\n\ndef f():\n    return import_module('pkg.commands.low')\n",
        "pkg/core/__init__.py": "",
        "pkg/core/job.py": "def g(name):\n    return __import__(name)\n",
        "pkg/core/table.py": "import importlib\nWRITERS = {'zip': 'pkg.core.job:g'}\n\n"
                             "def write(kind):\n    module, _, name = WRITERS[kind].partition(':')\n"
                             "    return getattr(importlib.import_module(module), name)\n",
    })
    imports = import_edges(pkg, by_name={"pkg.cli": ["pkg.commands.low"]})
    found = {(i.source, i.target, i.line, i.in_function, i.by_name) for i in imports}
    assert ("pkg.cli", "pkg.commands.low", 5, True, True) in found  # declared
    assert ("pkg.ui.app", "pkg.commands.low", 4, True, True) in found  # a literal name
    assert ("pkg.core.job", UNRESOLVED, 2, True, True) in found  # neither
    assert ("pkg.core.table", "pkg.core.job", 6, True, True) in found  # named in the module's own table
    assert ("pkg.cli", UNRESOLVED, 5, True, True) in {(i.source, i.target, i.line, i.in_function, i.by_name)
                                                      for i in import_edges(pkg)}  # undeclared
    bad = upward_imports(imports, ["pkg.cli", "pkg.commands", "pkg.ui", "pkg.core"])
    assert [(i.source, i.target) for i in bad] == [("pkg.core.job", UNRESOLVED), ("pkg.ui.app", "pkg.commands.low")]
    assert bad[1].where().endswith("app.py:4 (in a function) (by name)")
    text = front_map.__doc__  # the map marks by-name edges
    assert _marked("pkg.commands", [i for i in imports if i.source == "pkg.cli"]) == "pkg.commands* (by name)" and text


if __name__ == "__main__":
    print(front_map(), layer_map(), sep="\n\n")
