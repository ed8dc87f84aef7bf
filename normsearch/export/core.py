"""The functional core's source, copied into exported files: one source for the layer and the export.

:func:`core_source` takes the core functions a config's ``forward`` calls and returns their definitions
and those of every core function, class or constant they reach, as ``inspect.getsource`` gives them, in
the order they are defined. The primitives come from :mod:`normsearch.norm.primitives` (public torch APIs),
not from the fused private versions the library runs on.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable
from types import ModuleType

from ..norm import conv, functional, primitives

_MODULES = (primitives, functional, conv)
"""Modules whose definitions an exported file may copy, in the order the file holds them."""


def _names(code: str) -> set[str]:
    """Every name ``code`` reads or binds as a plain identifier."""
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def _constant_source(module: ModuleType, name: str) -> str | None:
    """``name = …`` at the top level of ``module``, with the docstring that follows it, or None."""
    source = inspect.getsource(module)
    body = ast.parse(source).body
    for index, node in enumerate(body):
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            nodes = [node]
            after = body[index + 1] if index + 1 < len(body) else None
            if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
                nodes.append(after)
            return "\n".join(ast.get_source_segment(source, n) for n in nodes) + "\n"
    return None


def _definitions() -> dict[str, tuple[int, int, str]]:
    """Every copyable name → (module rank, line, source). Primitives are taken from the public module
    whatever module the library binds them to."""
    found: dict[str, tuple[int, int, str]] = {}
    for rank, module in enumerate(_MODULES):
        for name, obj in vars(module).items():
            if name in found or name.startswith("__"):
                continue
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                lines, line = inspect.getsourcelines(obj)
                found[name] = (rank, line, textwrap.dedent("".join(lines)))
            elif isinstance(obj, (int, float, str, tuple)):
                source = _constant_source(module, name)
                if source is not None:
                    found[name] = (rank, 0, source)
    return found


DEFINITIONS = _definitions()
"""Name → (module rank, line, source) of everything an exported file may copy."""
CORE_NAMES = frozenset(DEFINITIONS)
"""Names the copied code may define at module level."""


IMPORTS = {
    "math": "import math",
    "Callable": "from collections.abc import Callable",
    "Any": "from typing import Any",
    "torch": "import torch",
    "F": "import torch.nn.functional as F",
    "once_differentiable": "from torch.autograd.function import once_differentiable",
}
"""Module-level name → the import line that binds it in an exported file (stdlib names first)."""
FROM_TORCH = ("Tensor", "nn")
"""Names imported in one ``from torch import …`` line."""
IMPORTED_NAMES = frozenset({*IMPORTS, *FROM_TORCH})


def import_lines(code: str) -> list[str]:
    """Import lines for the module-level names ``code`` uses (stdlib block, blank line, torch block)."""
    used = _names(code)
    stdlib = [IMPORTS[name] for name in ("math", "Callable", "Any") if name in used]
    third = [IMPORTS[name] for name in ("torch", "F") if name in used]
    from_torch = [name for name in FROM_TORCH if name in used]
    if from_torch:
        third.append(f"from torch import {', '.join(from_torch)}")
    if "once_differentiable" in used:
        third.append(IMPORTS["once_differentiable"])
    return stdlib + ([""] if stdlib and third else []) + third


def core_source(roots: Iterable[Callable | str]) -> list[str]:
    """Definitions (each a source string) of ``roots`` and all they reach, in definition order."""
    todo = [root if isinstance(root, str) else root.__name__ for root in roots]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in DEFINITIONS:
            continue
        seen.add(name)
        todo.extend(_names(DEFINITIONS[name][2]) - seen)
    ordered = sorted(seen, key=lambda name: DEFINITIONS[name][:2])
    return [DEFINITIONS[name][2].rstrip("\n") for name in ordered]
