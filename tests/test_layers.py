"""The package tree is the layer table (docs/explanation/design.md): no import cycles, every import counted.

import-linter (`make lint`) checks the layer contract; this test counts imports itself, inside
functions too (only `if TYPE_CHECKING:` blocks are left out), so a cycle hidden in a deferred import
fails the suite as well as the lint.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "st_cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The st_cli modules one import statement loads (the longest module prefix of each name)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names]
    found = []
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the st_cli modules it imports anywhere in its body, TYPE_CHECKING blocks aside."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
                graph[name].update(_imported(name, path, node, modules))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_is_in_layers() -> None:
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert {"cli", "encode", "eval", "export", "format", "model", "score", "training", "verify"} <= set(subpackages)


def test_no_module_outside_its_layer_reaches_up() -> None:
    """The same rule as the import-linter contract, so the suite fails without `make lint` too."""
    order = ["cli", "training", "eval", "score", "encode|verify|export", "model", "format"]
    rank = {name: i for i, names in enumerate(order) for name in names.split("|")}

    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in rank else None

    graph = import_graph()
    wrong = []
    for importer, imported in graph.items():
        for target in imported:
            src, dst = layer(importer), layer(target)
            if src is not None and dst is not None and src != dst and rank[dst] <= rank[src]:
                wrong.append(f"{importer} -> {target}")
    base = {"st_cli.errors", "st_cli.fsio", "st_cli.threads", "st_cli._version"}
    wrong += [f"{m} -> {t}" for m in base for t in graph[m] if t not in base]
    assert wrong == []


@pytest.mark.parametrize(
    "module", ["st_cli.format.summary", "st_cli.format.layout", "st_cli.format.manifest", "st_cli.format.kinds"]
)
def test_format_never_loads_torch(module: str) -> None:
    code = f"import sys, {module}; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_code_written_for_the_flat_package_still_imports() -> None:
    """Custom module files saved in folders before the move import `st_cli.modules.<file>`: the same classes."""
    code = (
        "from st_cli.modules.transformer import Transformer\n"
        "from st_cli.modules.base import Module\n"
        "import st_cli.modules.dense as old_dense\n"
        "import st_cli, st_cli.model.modules.transformer as new, st_cli.model.modules.dense as new_dense\n"
        "from st_cli.model import registry\n"
        "assert Transformer is new.Transformer and Module is st_cli.Module and old_dense is new_dense\n"
        "assert registry.get('Dense') is new_dense.Dense\n"
        "try:\n    import st_cli.modules.no_such_type\nexcept ModuleNotFoundError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_plugins_written_against_st_cli_types_still_build_their_spec() -> None:
    import st_cli.types as old
    from st_cli.format import spec, specs

    assert old.TypeSpec is spec.TypeSpec and old.Widths is spec.Widths and old.SPECS is specs.SPECS
    assert old.SPECS["Dense"].name == "Dense"


def _private_uses(path: Path, modules: dict[str, Path]) -> list[str]:
    """`from st_cli.x import _y` and `x._y` on an imported st_cli module: a private name crossing a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("st_cli"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    aliases.add(alias.asname or alias.name)
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            aliases.update(a.asname for a in node.names if a.asname and a.name.startswith("st_cli"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_file() -> None:
    modules = _modules()
    crossing = {name: uses for name, path in modules.items() if (uses := _private_uses(path, modules))}
    assert crossing == {}


def test_the_private_name_finder_finds_both_spellings(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from st_cli.model.modules.base import Module, _hidden\nfrom st_cli.model.modules import base\nbase._other()\n"
    )
    found = _private_uses(source, _modules())
    assert found == ["st_cli.model.modules.base._hidden", "base._other"]
