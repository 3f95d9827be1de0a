"""The import graph of the four packages: no circles, and data flows one way.

The packages are layers, ``ingest -> knowledge -> detector -> training``: a module may import its own
package and earlier ones, never a later one. Two modules must not import each other, directly or through
others. Both rules are checked on the source (``ast``), so every import counts: module level, inside
functions (the usual way to hide a circle), under ``TYPE_CHECKING``, and ``__import__("...")`` /
``importlib.import_module("...")`` with a literal name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("ingest", "knowledge", "detector", "training")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path, packages=LAYERS) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file under the packages."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _imported_names(tree: ast.AST, module: str, is_package: bool):
    """``(dotted name, line)`` of everything ``tree`` imports; ``from a import b`` gives ``a.b``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                yield (f"{prefix}.{alias.name}" if alias.name != "*" else prefix), node.lineno
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("__import__", "import_module"):
                yield node.args[0].value, node.lineno


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module ``name`` starts with (``a.b.func`` -> ``a.b``); None outside the tree."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, packages=LAYERS) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` within the packages (self-imports left out)."""
    modules = source_modules(root, packages)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: dict[str, int] = {}
        for name, line in _imported_names(tree, mod, path.name == "__init__.py"):
            target = _resolve(name, modules)
            if target is not None and target != mod:
                edges.setdefault(target, line)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def layer_violations(graph: dict[str, dict[str, int]], root: Path, layers=LAYERS) -> list[str]:
    """``file:line: a imports b`` for every import of a later package than the importer's."""
    rank = {name: i for i, name in enumerate(layers)}
    out = []
    for mod, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if rank[target.split(".")[0]] > rank[mod.split(".")[0]]:
                path = root.joinpath(*mod.split(".")).with_suffix(".py")
                if not path.exists():
                    path = root.joinpath(*mod.split("."), "__init__.py")
                out.append(f"{path.relative_to(root)}:{line}: {mod} imports {target}")
    return out


def _defined_names(tree: ast.Module) -> set[str]:
    """Names a module defines at its top level (also inside top-level ``if``/``try``/``with`` blocks)."""
    names: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(s.name)
            elif isinstance(s, ast.Assign):
                names.update(n.id for t in s.targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name):
                names.add(s.target.id)
            elif isinstance(s, ast.Import):
                names.update(a.asname or a.name.split(".")[0] for a in s.names)
            elif isinstance(s, ast.ImportFrom):
                names.update(a.asname or a.name for a in s.names)
            elif isinstance(s, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for block in (s.body, getattr(s, "orelse", []), getattr(s, "finalbody", [])):
                    visit(block)
                for handler in getattr(s, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return names


def stale_imports(root: Path, importers: dict[str, Path], packages=LAYERS) -> list[str]:
    """``file:line: ...`` for every absolute import from the packages that names a module that does not
    exist, or a name its module does not define (a function-level import fails only when it runs)."""
    modules = source_modules(root, packages)
    defined: dict[str, set[str]] = {}
    out = []
    for path in importers.values():
        rel = path.relative_to(root)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                out += [f"{rel}:{node.lineno}: no module {a.name}" for a in node.names
                        if a.name.split(".")[0] in packages and a.name not in modules]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                    and node.module.split(".")[0] in packages:
                if node.module not in modules:
                    out.append(f"{rel}:{node.lineno}: no module {node.module}")
                    continue
                if node.module not in defined:
                    defined[node.module] = _defined_names(ast.parse(modules[node.module].read_text()))
                names = defined[node.module]
                out += [f"{rel}:{node.lineno}: {node.module} has no {a.name}" for a in node.names
                        if a.name != "*" and f"{node.module}.{a.name}" not in modules and a.name not in names
                        and "__getattr__" not in names]
    return out


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    inside = set(component)
    edges = [f"{a} -> {b} (line {graph[a][b]})" for a in component for b in sorted(graph[a]) if b in inside]
    return "; ".join(edges)


@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO)


def test_the_walk_sees_every_package(graph):
    seen = {m.split(".")[0] for m in graph}
    assert seen == set(LAYERS)
    assert sum(len(e) for e in graph.values()) > 100  # a walk that found nothing would pass the rules below


def test_no_import_circles(graph):
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(_describe(c, graph) for c in found)


def test_packages_import_only_earlier_layers(graph):
    bad = layer_violations(graph, REPO)
    assert not bad, "imports against ingest -> knowledge -> detector -> training:\n" + "\n".join(bad)


def test_every_import_of_the_packages_names_what_exists():
    # the packages, and the tests, benchmarks and scripts that import them
    importers = {**source_modules(REPO), **{str(p): p for d in ("tests", "benchmarks", "scripts")
                                             for p in sorted((REPO / d).rglob("*.py"))}}
    bad = stale_imports(REPO, importers)
    assert not bad, "imports of modules or names that do not exist:\n" + "\n".join(bad)


def test_the_cli_registers_only_modules_that_exist(graph):
    # __import__("training.retrain") style registration lines are resolved like import statements
    modules = source_modules(REPO)
    cli = REPO / "training" / "cli"
    files = sorted(cli.rglob("*.py")) if cli.is_dir() else [REPO / "training" / "cli.py"]
    for path in files:
        mod = module_name(path, REPO)
        for name, line in _imported_names(ast.parse(path.read_text()), mod, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top in LAYERS:
                assert _resolve(name, modules) is not None, f"{path.relative_to(REPO)}:{line}: {name} not found"


# The checker itself, on small made-up trees: each rule fails where it should.

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"training/a.py": "from training import b\n", "training/b.py": "import training.a\n"},
     [["training.a", "training.b"]]),
    ({"training/a.py": "def f():\n    from training.b import g\n",
      "training/b.py": "from training.c import h\n", "training/c.py": "from . import a\n"},
     [["training.a", "training.b", "training.c"]]),
    ({"training/a.py": "__import__('training.b').b.register(1)\n", "training/b.py": "from training.a import x\n"},
     [["training.a", "training.b"]]),
    ({"training/a.py": "from training import b\n", "training/b.py": "import json\n"}, []),
])
def test_cycles_are_found(tmp_path, files, expected):
    files = {"ingest/__init__.py": "", "knowledge/__init__.py": "", "detector/__init__.py": "",
             "training/__init__.py": "", **files}
    root = _tree(tmp_path, files)
    assert cycles(import_graph(root)) == expected


def test_a_later_layer_import_is_found(tmp_path):
    root = _tree(tmp_path, {"ingest/__init__.py": "", "knowledge/__init__.py": "", "training/__init__.py": "",
                            "detector/__init__.py": "", "detector/x.py": "import json\n",
                            "ingest/r.py": "def f():\n    from detector.x import y\n",
                            "knowledge/k.py": "from ingest import r\n"})
    assert layer_violations(import_graph(root), root) == ["ingest/r.py:2: ingest.r imports detector.x"]


def test_a_stale_import_is_found(tmp_path):
    root = _tree(tmp_path, {"ingest/__init__.py": "", "ingest/a.py": "X = 1\ndef f():\n    pass\n",
                            "ingest/b.py": "from ingest.a import X, f\ndef g():\n    from ingest.a import moved\n",
                            "ingest/c.py": "import ingest.gone\nfrom ingest.old import y\n"})
    assert stale_imports(root, source_modules(root, ("ingest",)), ("ingest",)) == [
        "ingest/b.py:3: ingest.a has no moved", "ingest/c.py:1: no module ingest.gone",
        "ingest/c.py:2: no module ingest.old"]
