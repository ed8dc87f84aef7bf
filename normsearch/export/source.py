"""Assemble the exported file: module docstring, imports, the functional core's definitions the layer
calls (copied from normsearch, :mod:`normsearch.export.core`), the layer class and the conv wrapper.

The file needs only torch, through its public APIs; identifiers in it are fixed by the templates or checked
(:func:`~normsearch.export.names.check_class_name`), values are ``repr`` literals of the validated config,
and free text (provenance) passes through :func:`~normsearch.export.provenance.docstring_text`.
"""

from __future__ import annotations

import ast
import inspect
import re
import symtable
import textwrap

from .. import __version__
from ..norm import PRESETS, NormConfig, Spec, as_config, functional
from ..norm.config import GROUPED_PARTITIONS
from .codefmt import bracketed, docstring, indent
from .conv import CONV_CLASS_NAMES, conv_blocks
from .core import core_source, import_lines
from .formula import describe
from .forward import BODY, TOKENS_FORWARD, Forward, forward_body
from .names import check_class_name, default_class_name, matching_preset
from .provenance import Provenance, docstring_text


def _global_references(code: str) -> set[str]:
    """Names ``code`` reads from module scope (imports, helpers, builtins): a class of that name would
    shadow them. Locals and parameters do not count."""
    found: set[str] = set()
    tables = [symtable.symtable(code, "<export>", "exec")]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        module = table.get_type() == "module"  # a str before Python 3.13, a str-valued enum since
        found |= {
            s.get_name() for s in table.get_symbols() if s.is_referenced() and (module or s.is_global())
        }
    return found


_REPOSITORY_PATH = re.compile(r"\b[\w.-]+/[\w./-]*\.py\b")
"""A file path in normsearch's repository (``benchmarks/norm_speed.py``): meaningless in an exported file."""
_REFERENCE = re.compile(r":(?:func|class|data|meth|mod):`~?([\w.]+)`")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`:])")


def _formula() -> list[list[str]]:
    """The functional core's formula (the paragraphs of :mod:`normsearch.norm.functional`'s docstring from
    "For an input x" to the running estimates), as docstring paragraphs of ready lines."""
    paragraphs = [p.split("\n") for p in inspect.cleandoc(functional.__doc__ or "").split("\n\n")]
    start = next(i for i, p in enumerate(paragraphs) if p[0].startswith("For an input x"))
    return paragraphs[start : start + 3]


FORMULA = _formula()
"""The formula the copied core's docstrings call "the module docstring's"."""


def _defined(block: str) -> set[str]:
    """The module-level names a copied definition binds."""
    node = ast.parse(block).body[0]
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    return {node.name} if isinstance(node, ast.FunctionDef | ast.ClassDef) else set()


def _keeps(sentence: str, defined: set[str]) -> bool:
    """Whether a docstring sentence holds in the exported file: it names no repository path, and every
    Sphinx reference in it is to a name the file defines."""
    if _REPOSITORY_PATH.search(sentence):
        return False
    return all(name.rpartition(".")[2] in defined for name in _REFERENCE.findall(sentence))


def _paragraph(text: str, pad: str, first: str, defined: set[str]) -> str:
    """A docstring paragraph (its lines indented by ``pad``; the first after ``first``, the opening quotes
    and their indent, when it starts the docstring) without the sentences that do not hold in the exported
    file (:func:`_keeps`), rewrapped at the width it had; unchanged when all hold, and so are paragraphs
    with indented lines (formulas)."""
    lines = text.split("\n")
    if any(not line.startswith(pad) or line[len(pad) :].startswith(" ") for line in lines[1:]):
        return text
    sentences = _SENTENCE_END.split(" ".join(line.strip() for line in lines))
    kept = [sentence for sentence in sentences if _keeps(sentence, defined)]
    if len(kept) == len(sentences):
        return text
    width = max([len(first + lines[0]), *(len(line) for line in lines[1:])])
    start = first or pad
    wrapped = textwrap.wrap(" ".join(kept), width, initial_indent=start, subsequent_indent=pad)
    return "\n".join(wrapped)[len(start) :] if first else "\n".join(wrapped)


def _docstring_nodes(tree: ast.Module) -> list[ast.Constant]:
    """The docstring literals of a definition's source: those of its functions and classes, and a constant's
    (the string after its assignment)."""
    found = [
        node.body[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    ]
    if isinstance(tree.body[0], ast.Assign) and len(tree.body) > 1 and isinstance(tree.body[1], ast.Expr):
        found.append(tree.body[1].value)
    return found


def copied_docstrings(block: str, defined: set[str]) -> str:
    """A copied core definition with its docstrings reduced to what holds in the exported file: sentences
    naming a repository path, or a definition the file lacks (``defined``: the names it has), are dropped;
    a docstring left empty keeps its summary, with such references as plain names."""
    lines = block.split("\n")
    for node in sorted(_docstring_nodes(ast.parse(block)), key=lambda n: n.lineno, reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        raw = "\n".join(lines[first : last + 1])
        opening = raw.index('"""') + 3
        closing = raw.rindex('"""')
        inner = raw[opening:closing]
        pad = re.match(r"\s*", lines[first]).group()
        paragraphs = re.split(r"\n[ \t]*\n", inner)
        kept = [
            _paragraph(text, pad, raw[:opening] if index == 0 else "", defined)
            for index, text in enumerate(paragraphs)
        ]
        if kept != paragraphs:
            joined = "\n\n".join(text for text in kept if text.strip())
            if not joined.strip():  # nothing holds alone: the summary, its references made plain names
                joined = _REFERENCE.sub(
                    lambda m: m.group() if m.group(1).rpartition(".")[2] in defined else f"``{m.group(1)}``",
                    paragraphs[0],
                )
            lines[first : last + 1] = (raw[:opening] + joined + raw[closing:]).split("\n")
    return "\n".join(lines)


def _group_check(name: str) -> list[str]:
    """Refuse a channel count the group option does not divide (lines at the method-body indent)."""
    message = f'f"{name}={{{name}}} must divide num_channels={{num_channels}}"'
    return indent([f"if num_channels % {name}:"], BODY) + bracketed(
        "raise ValueError(", [message], ")", BODY + 1
    )


def _init(cfg: NormConfig, forward: Forward, compile_default: bool) -> list[str]:
    """``__init__``: hyperparameters as arguments with the config's values as defaults, ``device`` and
    ``dtype`` keywords (as torch's layers and timm take them), ``compile`` where the forward calls the
    functional core, then parameters and buffers under ``UnifiedNorm``'s names."""
    params = ["self", "num_channels: int"]
    check: list[str] = []
    body = ["self.num_channels = num_channels"]
    if cfg.groups is not None:
        params.append(f"groups: int = {cfg.groups!r}")
        check = _group_check("groups")
        body.append("self.groups = groups")
    elif cfg.group_size is not None:
        params.append(f"group_size: int = {cfg.group_size!r}")
        check = _group_check("group_size")
        body.append("self.groups = num_channels // group_size")
    if cfg.normalizes_activations:
        params.append(f"eps: float = {cfg.eps!r}")
        body.append("self.eps = eps")
    if cfg.running:
        params.append(f"momentum: float = {cfg.momentum!r}")
        body.append("self.momentum = momentum")
    params += ["*", "device: torch.device | str | None = None", "dtype: torch.dtype | None = None"]
    if forward.core:
        params.append(f"compile: bool = {compile_default!r}")
        (function,) = forward.calls
        body.append(f"self._norm = compile_core({function.__name__}) if compile else {function.__name__}")
    tensors = []
    if cfg.affine != "none":
        tensors.append("self.weight = nn.Parameter(torch.ones(num_channels, **dd))")
    if cfg.affine == "full":
        tensors.append("self.bias = nn.Parameter(torch.zeros(num_channels, **dd))")
    if cfg.act in ("evo_s0", "evo_b0"):
        tensors.append("self.v = nn.Parameter(torch.ones(num_channels, **dd))")
    if cfg.act == "tlu":
        tensors.append("self.tau = nn.Parameter(torch.zeros(num_channels, **dd))")
    if cfg.act in ("dyt", "derf"):
        tensors.append(f"self.alpha = nn.Parameter(torch.full((), {cfg.alpha_init!r}, **dd))")
    if cfg.act == "derf":
        tensors.append("self.shift = nn.Parameter(torch.zeros((), **dd))")
    if cfg.running:
        size = "num_channels" if cfg.partition == "batch" else "self.groups"
        tensors += [
            f'self.register_buffer("running_mean", torch.zeros({size}, **dd))',
            f'self.register_buffer("running_var", torch.ones({size}, **dd))',
            "count = torch.tensor(0, dtype=torch.long, device=device)",
            'self.register_buffer("num_batches_tracked", count)',
        ]
    if tensors:
        body += ['dd = {"device": device, "dtype": dtype}', *tensors]
    signature = bracketed("def __init__(", params, ") -> None:", 1)
    return signature + indent(["super().__init__()"], BODY) + check + indent(body, BODY)


def _extra_repr(cfg: NormConfig) -> list[str]:
    parts = ["{self.num_channels}"]
    if cfg.partition in GROUPED_PARTITIONS:
        parts.append("groups={self.groups}")
    if cfg.normalizes_activations:
        parts.append("eps={self.eps}")
    return indent(["def extra_repr(self) -> str:", f'    return f"{", ".join(parts)}"'], 1)


def _class_docstring(cfg: NormConfig, forward: Forward, provenance: Provenance | None) -> list[str]:
    preset = matching_preset(cfg)
    title = PRESETS[preset].title if preset else "Normalization layer"
    paragraphs = [[f"{title}, exported by normsearch."], *describe(cfg, forward.note)]
    origin = [f"Config: ``{cfg.spec()}``."]
    if provenance is not None:
        origin += provenance.lines()
    paragraphs.append(origin)
    return docstring(paragraphs, 1)


def _class(
    cfg: NormConfig, name: str, forward: Forward, provenance: Provenance | None, compile_default: bool
) -> list[str]:
    lines = [f"class {name}(nn.Module):", *_class_docstring(cfg, forward, provenance), ""]
    lines += _init(cfg, forward, compile_default) + [""]
    if cfg.layout == "tokens" and not forward.last_dim:
        lines += indent(TOKENS_FORWARD, 1) + [""]
        lines += indent(["def _forward_channels_first(self, x: Tensor) -> Tensor:"], 1) + forward.lines + [""]
    else:
        lines += indent(["def forward(self, x: Tensor) -> Tensor:"], 1) + forward.lines + [""]
    return lines + _extra_repr(cfg)


def _module_docstring(cfg: NormConfig, name: str, copied: bool) -> list[str]:
    summary = f"{name}: a normalization layer exported by normsearch {docstring_text(__version__)}."
    usage = [
        "Needs only PyTorch. Use it wherever a model takes a norm layer, for example",
        f"``torchvision.models.resnet18(norm_layer={name})``.",
    ]
    paragraphs = [[summary], usage]
    if copied:
        paragraphs.append(
            [
                "The functions below the imports are normsearch's functional core",
                "(``normsearch.norm.functional`` and ``normsearch.norm.primitives``), copied as they",
                "are (their docstrings trimmed to what this file holds): normsearch's own layer runs",
                "the same code. Public torch APIs only. The formula their docstrings refer to as the",
                "module docstring's:",
            ]
        )
        paragraphs += FORMULA
    if cfg.weight != "none":
        conv = CONV_CLASS_NAMES[cfg.weight]
        paragraphs.append([f"Weight scheme: build the convs that precede the norm as ``{conv}``."])
    return docstring(paragraphs, 0)


def export_source(
    spec: Spec,
    *,
    class_name: str | None = None,
    provenance: Provenance | None = None,
    compile: bool = False,
) -> str:
    """Python source of a standalone module with ``spec``'s layer as an ``nn.Module`` subclass.

    ``class_name`` defaults to :func:`default_class_name`; a given one must be an ASCII identifier that is
    not a keyword nor a name the module defines (``ValueError`` otherwise, as for an invalid spec).
    The class takes ``num_channels`` (and groups / eps / momentum where they apply), holds the same
    parameters and buffers as ``build_norm(spec, num_channels)`` and computes the same outputs. Where it
    runs on the functional core it also takes ``compile`` (default ``compile``): run the core through
    ``torch.compile``.
    """
    cfg = as_config(spec)
    name = default_class_name(cfg) if class_name is None else check_class_name(class_name)
    forward = forward_body(cfg)
    blocks = ["\n".join(_class(cfg, name, forward, provenance, compile))]
    copied = core_source([*forward.calls, *(["compile_core"] if forward.core else [])])
    defined = {name for block in copied for name in _defined(block)}
    blocks[:0] = [copied_docstrings(block, defined) for block in copied]
    blocks += conv_blocks(cfg)
    body = "\n\n\n".join(blocks)
    if name in _global_references(body):
        raise ValueError(
            f"class name {name!r} is a global name the exported module's code uses; choose another"
        )
    header = _module_docstring(cfg, name, bool(forward.calls)) + [""] + import_lines(body)
    return "\n".join(header) + "\n\n\n" + body + "\n"
