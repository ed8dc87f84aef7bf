"""Assemble the exported file: module docstring, imports, the functional core's definitions the layer
calls (copied from normsearch, :mod:`normsearch.export.core`), the layer class and the conv wrapper.

The file needs only torch, through its public APIs; identifiers in it are fixed by the templates or checked
(:func:`~normsearch.export.names.check_class_name`), values are ``repr`` literals of the validated config,
and free text (provenance) passes through :func:`~normsearch.export.provenance.docstring_text`.
"""

from __future__ import annotations

import symtable

from .. import __version__
from ..norm import PRESETS, NormConfig, Spec, as_config
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
                "are: normsearch's own layer runs the same code. Public torch APIs only.",
            ]
        )
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
    blocks[:0] = core_source([*forward.calls, *(["compile_core"] if forward.core else [])])
    blocks += conv_blocks(cfg)
    body = "\n\n\n".join(blocks)
    if name in _global_references(body):
        raise ValueError(
            f"class name {name!r} is a global name the exported module's code uses; choose another"
        )
    header = _module_docstring(cfg, name, bool(forward.calls)) + [""] + import_lines(body)
    return "\n".join(header) + "\n\n\n" + body + "\n"
