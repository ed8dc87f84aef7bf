"""The user's functions, named ``FILE.py:FUNC`` or ``package.module:FUNC`` (model builders, datasets).

``load_function(label, where, function)`` imports the file or module once and returns the callable; anything
that goes wrong (missing file, an exception while importing it, no such function) is one ``ValueError`` line
that starts with ``label`` (e.g. ``model 'nets.py:build'``).

Objects handed to the Python API (:func:`normsearch.run`) are named ``python:…`` (:data:`IN_PROCESS`): a
study records the name, which is valid anywhere (its records stay readable), but only the process that
registered it can build the object; :func:`elsewhere` says so.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


def one_line(err: BaseException) -> str:
    """``Type: message`` of an exception, whitespace collapsed to one line."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


IN_PROCESS = "python:"
"""Prefix of the names of in-process objects (a model function or datasets given to ``normsearch.run``)."""


def elsewhere(label: str, fix: str) -> str:
    """The one line for an in-process name (``label``, e.g. ``model 'python:my_net'``) used in a process that
    does not hold its object; ``fix`` names the form another process can load."""
    return (
        f"{label} was given to normsearch.run() in another process and exists only there: what it stored "
        f"stays readable, but probing or training more needs it: call normsearch.run() again with it (the "
        f"study resumes), or give it as {fix}"
    )


def _load_file(label: str, where: str) -> ModuleType:
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"{label}: file {where} does not exist")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    module_name = f"normsearch_user_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any error in the user's file is that file's problem
        del sys.modules[module_name]
        raise ValueError(f"{label}: {where} failed to load: {one_line(err)}") from None
    return module


def load_function(label: str, where: str, function: str, expected: str) -> Callable[..., Any]:
    """The callable ``function`` of the file (``where`` ends in ``.py``) or importable module ``where``.

    ``expected`` describes its signature for the error when it is missing (e.g. ``FUNC() -> (train, val)``).
    """
    if where.endswith(".py"):
        module = _load_file(label, where)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{label}: cannot import module {where!r}: {one_line(err)}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"{label}: {where} has no function {function!r} (expected {expected})")
    return fn


__all__ = ["IN_PROCESS", "elsewhere", "load_function", "one_line"]
