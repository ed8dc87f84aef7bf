"""Command-line interface. Each command module registers its commands on :data:`app` when imported.

The modules are imported when one of their commands is looked up (:class:`~normsearch.cli.app.CommandsGroup`):
a command imports its own module only, so torch, Optuna and matplotlib load only where it needs them, and
``normsearch --help`` lists every command by the name and docstring :func:`command_help` reads from the
modules' source with :mod:`ast`, importing none. :func:`load_all` imports them all (to walk every command).
"""

from __future__ import annotations

import ast
import functools
from importlib import import_module
from pathlib import Path
from typing import Any

from .app import app

MODULES = ("confirm", "export", "presets", "probe", "report", "search")
"""The command modules, in registration order (the order ``--help`` lists their commands)."""


@functools.cache
def command_help() -> dict[str, tuple[str, str]]:
    """Top-level command name → (its module, its help text), in ``--help`` order: each module's
    ``@command(...)`` functions (name: the first argument, else the function's name), then the typer sub-apps
    it adds (``app.add_typer(X, name=...)``, help: ``typer.Typer(help=...)``)."""
    commands: dict[str, tuple[str, str]] = {}
    groups: dict[str, tuple[str, str]] = {}
    for module in MODULES:
        tree = ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
        sub_apps = {
            target.id: _keyword(node.value, "help") or ""
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    if _called(decorator, "command") and _keyword(decorator, "on") is None:
                        name = decorator.args[0].value if decorator.args else node.name.replace("_", "-")
                        commands[name] = (module, ast.get_docstring(node) or "")
            elif isinstance(node, ast.Call) and _called(node, "add_typer"):
                name, sub_app = _keyword(node, "name"), node.args[0]
                if isinstance(sub_app, ast.Name):
                    groups[name] = (module, sub_apps.get(sub_app.id, ""))
    return commands | groups


def _called(node: ast.AST, name: str) -> bool:
    function = getattr(node, "func", None)
    return (
        isinstance(function, ast.Name | ast.Attribute)
        and getattr(function, "id", getattr(function, "attr", None)) == name
    )


def _keyword(call: ast.Call, name: str) -> Any:
    """The literal value of keyword ``name`` of ``call`` (a name node's id for a non-literal), else None."""
    for keyword in call.keywords:
        if keyword.arg == name:
            value = keyword.value
            return value.value if isinstance(value, ast.Constant) else getattr(value, "id", "")
    return None


def load_all() -> None:
    """Import every command module (each registers its commands on :data:`app`)."""
    for module in MODULES:
        import_module(f".{module}", __name__)


__all__ = ["MODULES", "app", "command_help", "load_all"]
