"""Lay out generated lines as ``ruff format`` (default settings) would, so exported files need no formatter.

The generator only emits simple statements; the one construct that can overflow a line is a single bracket
pair of atomic items (a call, a ``def`` signature). :func:`bracketed` lays it out the way ruff does: on one
line if it fits, else the items on one indented line, else one item per line with a trailing comma.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LINE_LENGTH = 88
"""``ruff format``'s default line length."""
INDENT = "    "


def indent(lines: Iterable[str], level: int) -> list[str]:
    """Lines shifted right by ``level`` indents (empty lines stay empty)."""
    pad = INDENT * level
    return [pad + line if line else "" for line in lines]


def bracketed(head: str, items: Sequence[str], tail: str, level: int = 0) -> list[str]:
    """``head + ", ".join(items) + tail`` at indent ``level``; ``head`` ends with the opening bracket.

    Example: ``bracketed("y = F.group_norm(", ["x", "self.groups"], ")", 2)``.
    """
    pad = INDENT * level
    flat = f"{pad}{head}{', '.join(items)}{tail}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    joined = f"{pad}{INDENT}{', '.join(items)}"
    if len(joined) <= LINE_LENGTH:
        return [pad + head, joined, pad + tail]
    return [pad + head, *(f"{pad}{INDENT}{item}," for item in items), pad + tail]


def docstring(paragraphs: Sequence[Sequence[str]], level: int) -> list[str]:
    """A triple-quoted docstring at indent ``level`` from paragraphs of ready lines.

    The first paragraph must be one line (the summary); lines are taken as they are, so they must already
    be safe inside ``\"\"\"`` (see :func:`normsearch.export.provenance.docstring_text`).
    """
    summary, *rest = paragraphs
    if len(summary) != 1:
        raise ValueError("a docstring summary is one line")
    if not rest:
        return indent([f'"""{summary[0]}"""'], level)
    body: list[str] = [f'"""{summary[0]}']
    for paragraph in rest:
        body.append("")
        body.extend(paragraph)
    body.append('"""')
    return indent(body, level)
