"""The package's shape: imports point one way along the data path, no cycles, any import order works, the public
surface is the recorded one, and no module outgrows a readable size.

The import graph is read from the source with ``ast`` (nothing is imported), so a cycle is caught even when the
current import order happens to work.
"""

import ast
import pathlib
import random
import subprocess
import sys

import pytest

import jaxrec

PACKAGE = pathlib.Path(jaxrec.__file__).parent
FIXTURES = pathlib.Path(__file__).parent / "fixtures"

#: Layers along the data path: a module may import from its own layer's package or any lower layer, never from a
#: higher one. Siblings of one layer (``runs``, ``diagnostics``, ``plot``, ``sweep``) may import each other one way.
LAYERS = (
    ("checks", "version"),
    ("data",),
    ("batching",),
    ("models", "graph"),
    ("losses",),
    ("train",),
    ("topk",),
    ("metrics",),
    ("evaluate",),
    ("methods", "mapping", "multidomain"),
    ("runs", "diagnostics", "plot", "sweep"),
    ("cli", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: pathlib.Path) -> str:
    parts = ("jaxrec",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _targets(module: str, node: ast.AST) -> list[str]:
    """The jaxrec modules an import statement loads (a name imported from a package counts as its submodule when
    the package has one of that name)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if isinstance(node, ast.ImportFrom):
        base = _resolve(module, node)
        out = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:
                out.append(sub)
            elif base in MODULES:
                out.append(base)
        return out
    return []


def _imports(module: str, *, module_level: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if module_level and isinstance(node, ast.If):  # e.g. `if TYPE_CHECKING:` is not an import at run time
            continue
        found.update(t for t in _targets(module, node) if t != module)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if m != "jaxrec" and _layer(m) is None)
    assert not missing, f"modules outside the layer list {LAYERS}: {missing}"


def test_no_import_cycle():
    graph = {m: _imports(m, module_level=True) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_imports_point_down_the_data_path():
    wrong = []
    for m in MODULES:
        if m == "jaxrec":
            continue
        for t in _imports(m, module_level=False):  # function-level imports count too
            if t != "jaxrec" and _layer(t) > _layer(m):
                wrong.append(f"{m} imports {t}")
            if t == "jaxrec":
                wrong.append(f"{m} imports the top-level package (import the module it needs)")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_private_name_crosses_modules():
    """What another module needs is public where it lives (a toolkit, not underscore helpers)."""
    wrong = []
    for m in MODULES:
        tree = ast.parse(MODULES[m].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _resolve(m, node).startswith("jaxrec"):
                wrong += [
                    f"{m}: from {_resolve(m, node)} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.endswith("__")
                ]
    assert not wrong, "\n".join(wrong)


def test_module_sizes():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    over_600 = {m: n for m, n in sizes.items() if n > 600}
    over_450 = {m: n for m, n in sizes.items() if n > 450}
    assert not over_600, f"modules over 600 lines: {over_600}"
    assert len(over_450) <= 3, f"more than three modules over 450 lines: {over_450}"


def _public_modules() -> list[str]:
    return sorted(m for m in MODULES if not any(p.startswith("_") for p in m.split(".")[1:]))


@pytest.mark.parametrize("order", ["sorted", "reversed", "layers", "layers_reversed", "shuffled_0", "shuffled_1"])
def test_public_modules_import_in_any_order(order):
    """Every public module imports in a fresh interpreter whichever comes first (each order is one interpreter)."""
    mods = _public_modules()
    if order == "reversed":
        mods = mods[::-1]
    elif order.startswith("layers"):
        mods = sorted(mods, key=lambda m: (_layer(m) or 0, m), reverse=order.endswith("reversed"))
    elif order.startswith("shuffled"):
        random.Random(int(order[-1])).shuffle(mods)
    code = "import warnings\nwarnings.simplefilter('ignore', DeprecationWarning)\n"
    code += "".join(f"import {m}\n" for m in mods) + "import jaxrec\nassert jaxrec.METHODS\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-3000:]


def test_public_surface_is_the_recorded_one():
    """``jaxrec.__all__`` is the surface in tests/fixtures/public_api.txt: changing it is a deliberate act."""
    recorded = (FIXTURES / "public_api.txt").read_text().split()
    assert sorted(jaxrec.__all__) == recorded
