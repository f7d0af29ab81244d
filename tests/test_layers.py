"""The package's layers (docs/design.md, "Layers"): no import circle between modules, and no import
from a lower layer to a higher one. Imports are read with ``ast`` from every module, including the
ones inside functions (a lazy import is still a dependency)."""
import ast
import os
from typing import Dict, Set

PKG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simformer")

# Lowest first. A package may import its own modules and any package on a lower floor.
LAYERS = [
    ["utils"],
    ["config", "stats"],
    ["data"],
    ["modeling"],
    ["evaluation"],
    ["engine"],
    ["fewshot"],
    ["retrain"],
    ["sweeps"],
    ["commands", "cli", "__main__"],
]
FLOOR = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> Dict[str, str]:
    """Dotted module name -> file path, for every module of the package."""
    out = {}
    for root, _, files in os.walk(PKG_DIR):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG_DIR))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(root, f)
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module a dotted name refers to: itself, or the longest module prefix (``pkg.mod.func``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> Set[str]:
    """Modules of the package that ``module`` imports (anywhere in the file)."""
    path = MODULES[module]
    is_pkg = path.endswith("__init__.py")
    package = module if is_pkg else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "simformer")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "simformer":
                target = node.module
            else:
                continue
            for alias in node.names:  # ``from pkg import module`` imports that module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else _resolve(target))
    found.discard(module)
    found.discard("")
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_graph_sees_known_edges():
    # the walker itself: relative, absolute, lazy and ``from pkg import module`` imports
    assert "simformer.data.build" in GRAPH["simformer.engine.trainer"]
    assert "simformer.utils.comm" in GRAPH["simformer.engine.trainer"]
    assert "simformer.modeling.image_list" in GRAPH["simformer.modeling.cam"]
    assert "simformer.data.datasets.toyscenes" in GRAPH["simformer.data.catalog"]  # inside a function
    assert "simformer.modeling.pair_losses" in GRAPH["simformer.modeling.criterion"]  # from . import x


def test_every_package_has_a_floor():
    missing = sorted({_part(m) for m in MODULES} - set(FLOOR) - {""})
    assert not missing, f"packages without a floor in LAYERS (and in docs/design.md): {missing}"


def test_no_upward_imports():
    bad = []
    for mod, deps in GRAPH.items():
        own = _part(mod)
        if not own:
            continue
        for dep in deps:
            other = _part(dep)
            if other and other != own and FLOOR[other] > FLOOR[own]:
                bad.append(f"{mod} (floor {FLOOR[own]}) imports {dep} (floor {FLOOR[other]})")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(bad))


def _cycle(graph: Dict[str, Set[str]]):
    """One import circle as a list of modules, or None (iterative DFS, colours)."""
    colour = {m: 0 for m in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    # A package's __init__ that re-exports its modules is imported by them only through their
    # package path, which Python resolves before the module itself: leave those edges out.
    graph = {m: {d for d in deps if not (MODULES[d].endswith("__init__.py") and m.startswith(d + "."))}
             for m, deps in GRAPH.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)

