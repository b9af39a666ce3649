"""The package's layering, read from the source: imports only go down the data flow, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "perturbscope"

#: layer of each top-level module or subpackage of perturbscope (docs/architecture.md)
LAYERS: dict[str, int] = {
    "__init__": 0, "validation": 0, "sampling": 0, "stats": 0, "fileio": 0, "progress": 0, "figures": 0,
    "paper": 0, "train_config": 0, "rng": 0,
    "theory": 1, "data": 2, "models": 3, "attacks": 4, "probes": 5, "analyses": 5,
    "harmless": 6, "certify": 6, "train": 6, "audit": 7, "experiments": 8, "report": 9,
    "cli": 10, "__main__": 11,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported perturbscope module, at top level?)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    out = []
    me = _module_name(path)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n == "perturbscope" or n.startswith("perturbscope."):
                out.append((n, id(node) in top))
    return out


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    if key not in LAYERS:
        raise AssertionError(f"module {module} is not in a layer of tests/test_architecture.py::LAYERS")
    return key, LAYERS[key]


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_has_a_layer():
    for mod in _all_modules():
        _layer(mod)


def test_imports_go_down_the_data_flow():
    modules = _all_modules()
    bad = []
    for mod, path in modules.items():
        key, layer = _layer(mod)
        for name, _top in _imports(path):
            target = _resolve(name, modules)
            if target is None or target == "perturbscope":
                continue
            tkey, tlayer = _layer(target)
            if tkey != key and tlayer >= layer and not (tlayer == layer == 0):
                bad.append(f"{mod} ({key}, layer {layer}) imports {target} ({tkey}, layer {tlayer})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("low,high", [("attacks", "audit"), ("attacks", "experiments"), ("attacks", "report"),
                                      ("experiments", "report"), ("theory", "attacks"), ("theory", "models")])
def test_named_forbidden_imports(low, high):
    modules = _all_modules()
    bad = [f"{m} imports {n}" for m, p in modules.items() if _layer(m)[0] == low
           for n, _ in _imports(p) if n.startswith(f"perturbscope.{high}")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_at_module_level():
    modules = _all_modules()
    graph = {m: {t for n, top in _imports(p) if top and (t := _resolve(n, modules)) and t != m}
             for m, p in modules.items()}
    # a module imports its parent packages first: those edges are implicit, not cycles
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if m.startswith(t + "."):
                continue
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
