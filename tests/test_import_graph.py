"""The package's layers point one way: reference <- ops <- models <- losses <- library <- CLI.

Every module of ``attngan_fast`` (``attngan_fast.kernels`` included) is parsed with ``ast``; every
``import`` / ``from ... import`` counts, wherever it is: at module level, inside functions (an
import deferred to call time still couples the modules) and under ``if TYPE_CHECKING:`` (a type
annotation is a dependency too). Dynamic imports (``importlib.import_module``) are not seen.

An import of ``a.b.c`` also depends on the packages ``a.b`` (their ``__init__`` runs first),
except those that contain the importer (already being imported) and the root ``attngan_fast``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import attngan_fast.kernels  # binds attngan_fast too

ROOT = "attngan_fast"

# Lowest first. A module may import modules of its own layer or of a lower one. A module belongs
# to the layer of the longest prefix that names it (``attngan_fast.ops`` covers ``attngan_fast.ops.*``).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("reference", ("attngan_fast.reference",)),
    ("base", ("attngan_fast._version", "attngan_fast._extension", "attngan_fast.backend", "attngan_fast.checkpoint",
              "attngan_fast.config", "attngan_fast.cpu_memory", "attngan_fast.io", "attngan_fast.kernels")),
    ("ops", ("attngan_fast.ops",)),
    ("models", ("attngan_fast.models",)),
    ("losses", ("attngan_fast.losses",)),
    ("library", ("attngan_fast.accelerate", "attngan_fast.data", "attngan_fast.demo", "attngan_fast.metrics",
                 "attngan_fast.sampling", "attngan_fast.serving", "attngan_fast.training", "attngan_fast.visualize")),
    ("top", ("attngan_fast.cli",)),  # the command line; the root package (the public facade) is here too
]

def _module_files() -> dict[str, Path]:
    """Module name -> source file, for every module of the package (kernels ship as attngan_fast.kernels)."""
    files = {}
    for package, directory in ((ROOT, Path(attngan_fast.__file__).parent),
                               (f"{ROOT}.kernels", Path(attngan_fast.kernels.__file__).parent)):
        for path in directory.rglob("*.py"):
            rel = path.relative_to(directory).with_suffix("").parts
            if "__pycache__" in rel:
                continue
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            files[".".join((package, *parts))] = path
    return files


FILES = _module_files()
MODULES = frozenset(FILES)


def _is_package(name: str) -> bool:
    return FILES[name].name == "__init__.py"


def _known(name: str) -> str | None:
    """The longest prefix of a dotted name that is a module of the package, or None."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def _imported(module: str) -> set[str]:
    """Modules of the package that ``module``'s source imports (anywhere in the file)."""
    tree = ast.parse(FILES[module].read_text(), str(FILES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(filter(None, (_known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith(ROOT):
                continue
            for alias in node.names:  # `from package import module` imports the module
                full = f"{source}.{alias.name}"
                target = full if full in MODULES else _known(source)
                if target:
                    found.add(target)
    return found


def _edges(module: str) -> set[str]:
    """What importing ``module`` runs first: its imports and their enclosing packages (see the module docstring)."""
    out = set()
    for target in _imported(module):
        parts = target.split(".")
        for n in range(2, len(parts) + 1):  # skip the root package
            name = ".".join(parts[:n])
            if name != target and (module == name or module.startswith(name + ".")):
                continue  # a package that contains the importer is already being imported
            if name != module:
                out.add(name)
    return out


GRAPH = {m: _edges(m) for m in MODULES}


def _layer(module: str) -> int:
    if module == ROOT:
        return len(LAYERS) - 1
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module}: no layer; add it to LAYERS in {__file__}"
    return best


def test_every_module_found_and_placed():
    assert {"attngan_fast.reference", "attngan_fast.ops.dispatch", "attngan_fast.losses.oracle",
            "attngan_fast.kernels.attention"} <= MODULES
    for m in MODULES:
        _layer(m)


def test_no_import_cycle():
    """No cycle among the modules (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_reference_imports_nothing_of_the_package():
    offenders = {m: sorted(GRAPH[m] - {n for n in MODULES if n.startswith("attngan_fast.reference")})
                 for m in MODULES if m.startswith("attngan_fast.reference")}
    assert not any(offenders.values()), offenders
    for m in (m for m in MODULES if m.startswith("attngan_fast.reference")):
        tree = ast.parse(FILES[m].read_text())
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert roots <= {"__future__", "typing", "torch"}, f"{m} imports {sorted(roots)}: torch only"


def test_ops_import_only_the_layers_below():
    for m in (m for m in MODULES if m.startswith("attngan_fast.ops")):
        bad = sorted(n for n in GRAPH[m] if _layer(n) > _layer("attngan_fast.ops"))
        assert not bad, f"{m} imports {bad}"


def test_layers_point_one_way():
    upward = []
    for m, targets in GRAPH.items():
        for n in targets:
            if _layer(n) > _layer(m):
                upward.append(f"{m} ({LAYERS[_layer(m)][0]}) -> {n} ({LAYERS[_layer(n)][0]})")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))
