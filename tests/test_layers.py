"""The package's modules depend on each other one way, following the pipeline: every ``normsearch`` import
(module level or inside a function, as Python runs it) read from the source, between top-level modules and
subpackages. A ``from .confirm.settings import X`` counts as importing ``confirm``: Python runs the package's
``__init__`` first. Imports under ``if TYPE_CHECKING:`` are left out: they never run."""

from __future__ import annotations

import ast
from pathlib import Path

import normsearch

ROOT = Path(normsearch.__file__).parent
LAYERS = (
    ("settings", "journal", "failures", "userfunc", "allocator", "task"),
    ("norm", "candidate"),
    ("sources", "data", "text", "gpt", "models"),
    ("probes",),
    ("score",),
    ("records",),
    ("storage",),
    ("train",),
    ("confirm",),
    ("space",),
    ("search",),
    ("leaderboard", "export"),
    ("report",),
    ("pipeline",),
    ("cli",),
    ("console",),
)
"""Top-level units, lowest first: a unit may import only units of its own layer or below. The space file holds
the probe and confirmation settings, so :mod:`normsearch.space` sits above the ``probes`` and ``confirm``
packages that define them; the search above the space it draws from; the leaderboard above the confirmation
it reports."""
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        ):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(source: str, module: str, *, package: bool = False) -> set[str]:
    """The ``normsearch`` modules that the source of ``module`` (a package's ``__init__`` with ``package``)
    imports, anywhere in it, relative imports resolved."""
    base_package = module if package else module.rpartition(".")[0]
    tree = ast.parse(source)
    skip = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            parts = base_package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            found.update([target] + [f"{target}.{alias.name}" for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "normsearch"}


def _unit(module: str) -> str | None:
    """``normsearch.confirm.units`` → ``confirm``; None for the package root and its ``__version__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__version__" else None


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        unit = _unit(_module(path))
        if unit is None:
            continue
        found = imports(path.read_text(encoding="utf-8"), _module(path), package=path.name == "__init__.py")
        graph.setdefault(unit, set()).update(
            target for target in map(_unit, found) if target not in (None, unit)
        )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_reader_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    source = (
        "import optuna\nfrom . import select\n\ndef f():\n    from ..leaderboard import build_rows\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import app\n"
    )
    assert imports(source, "normsearch.confirm.x") == {
        "normsearch.confirm",
        "normsearch.confirm.select",
        "normsearch.leaderboard",
        "normsearch.leaderboard.build_rows",
    }
    assert imports("from .results import a\n", "normsearch.confirm", package=True) == {
        "normsearch.confirm.results",
        "normsearch.confirm.results.a",
    }


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_top_level_modules() -> None:
    assert cycles(unit_graph()) == []


def test_imports_follow_the_pipeline() -> None:
    graph = unit_graph()
    assert set(graph) <= set(RANK), f"units missing from LAYERS: {sorted(set(graph) - set(RANK))}"
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if RANK[b] > RANK[a])
    assert upward == []
    assert "leaderboard" not in graph["confirm"] and "confirm" in graph["leaderboard"]
