"""The package is layered: no import cycle among annbench's modules, and the backend registry
with its grids imports nothing from the layers above it, not even inside a function."""

import ast
from pathlib import Path

import annbench

PACKAGE = Path(annbench.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path], top_level: bool) -> set[str]:
    """The annbench modules ``path`` imports (at import time only, with ``top_level``)."""
    found = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if top_level and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child):
                continue
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{alias.name}" for alias in child.names]
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name.startswith("annbench"):
                    found.add(name)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_import_cycle_at_import_time():
    modules = _modules()
    graph = {name: _imports(path, modules, top_level=True) for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            for other in graph[name] - seen:
                if other == goal:
                    return True
                seen.add(other)
                todo.append(other)
        return False

    cycles = [name for name in graph if reaches(name, name)]
    assert not cycles, f"modules in an import cycle: {', '.join(cycles)}"


def test_registry_and_param_grid_import_only_the_shared_layer():
    modules = _modules()
    allowed = {"annbench.errors", "annbench.index", "annbench.metrics", "annbench.param_grid"}
    for name in ("annbench.registry", "annbench.param_grid"):
        above = _imports(modules[name], modules, top_level=False) - allowed - {name}
        assert not above, f"{name} imports {', '.join(sorted(above))}"
