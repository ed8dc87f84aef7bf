"""The exported layer's ``forward``: wiring only. A fused torch kernel where
:func:`~normsearch.norm.functional.select_kernel` picks one, else one call of the functional core function
``UnifiedNorm`` runs (copied into the file by :mod:`normsearch.export.core`), with the layer's parameters
and buffers, its ``groups``/``eps``/``momentum`` attributes and the config's choices as literals (bools and
strings of the validated config). Lines come out at the indent of a method body and laid out as
``ruff format`` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from ..norm import NormConfig
from ..norm import functional as core
from ..norm.config import GROUPED_PARTITIONS
from ..norm.layer import CORE_FUNCTIONS, TENSOR_ARGUMENTS, kernel_of, literal_options
from .codefmt import bracketed, indent

BODY = 2
"""Indent level of a method body inside the class."""


@dataclass(frozen=True)
class Forward:
    """A forward body (lines at indent :data:`BODY`), the docstring's kernel note, and the core functions
    the class calls (copied into the file with all they reach)."""

    lines: list[str]
    note: str
    calls: tuple[Callable, ...] = field(default=())
    last_dim: bool = False
    """Whether the body takes a layout ``tokens`` input (N, *L, C) as it is (else channels first)."""
    core: bool = False
    """Whether the body calls a core function through ``self._norm`` (the class's ``compile`` option)."""


# ---------------------------------------------------------------------------------------------------
# Fused kernels.
def _weight_bias(cfg: NormConfig) -> list[str]:
    return {"full": ["self.weight", "self.bias"], "gain": ["self.weight"], "none": []}[cfg.affine]


def _count_batches(cfg: NormConfig) -> list[str]:
    """Count ``num_batches_tracked`` in training mode, as ``UnifiedNorm`` and ``nn.BatchNorm2d`` do."""
    return ["if self.training:", "    self.num_batches_tracked.add_(1)"] if cfg.running else []


def _batch_norm(cfg: NormConfig) -> Forward:
    if cfg.running:
        items = ["x", "self.running_mean", "self.running_var", *_weight_bias(cfg)]
        items += ["training=self.training", "momentum=self.momentum", "eps=self.eps"]
    else:
        items = ["x", "None", "None", *_weight_bias(cfg), "training=True", "eps=self.eps"]
    lines = indent(_count_batches(cfg), BODY) + bracketed("return F.batch_norm(", items, ")", BODY)
    return Forward(lines, "Runs on torch's fused kernel ``F.batch_norm`` (as ``nn.BatchNorm2d``).")


_GROUP_NORM_GROUPS = {"layer": "1", "instance": "self.num_channels", "group": "self.groups"}


def _group_norm(cfg: NormConfig) -> Forward:
    items = ["x", _GROUP_NORM_GROUPS[cfg.partition], *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("return F.group_norm(", items, ")", BODY)
    return Forward(lines, "Runs on torch's fused kernel ``F.group_norm`` (as ``nn.GroupNorm``).")


def _layer_rms_norm(cfg: NormConfig) -> Forward:
    lines = ["y = F.rms_norm(x, x.shape[1:], eps=self.eps)"]
    calls: tuple[Callable, ...] = ()
    if cfg.affine == "gain":
        lines.append("return y * per_channel(self.weight, y)")
        calls = (core.per_channel,)
    else:
        lines.append("return y")
    return Forward(indent(lines, BODY), "Runs on torch's fused kernel ``F.rms_norm`` over (C, *S).", calls)


def _last_dim_layer_norm(cfg: NormConfig) -> Forward:
    items = ["x", "(self.num_channels,)", *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("return F.layer_norm(", items, ")", BODY)
    note = "Runs on torch's fused kernel ``F.layer_norm`` over the last dim (as ``nn.LayerNorm(C)``)."
    return Forward(lines, note, last_dim=True)


def _last_dim_rms_norm(cfg: NormConfig) -> Forward:
    items = ["x", "(self.num_channels,)", *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("return F.rms_norm(", items, ")", BODY)
    note = "Runs on torch's fused kernel ``F.rms_norm`` over the last dim (as ``nn.RMSNorm(C)``)."
    return Forward(lines, note, last_dim=True)


def _tensors(cfg: NormConfig, names: tuple[str, ...]) -> list[str]:
    """``name=self.name`` for the layer's parameters and buffers among ``names``."""
    present = {
        "weight": cfg.affine != "none",
        "bias": cfg.affine == "full",
        "tau": cfg.act == "tlu",
        "v": cfg.act in ("evo_s0", "evo_b0"),
        "alpha": cfg.act in ("dyt", "derf"),
        "shift": cfg.act == "derf",
        "running_mean": bool(cfg.running),
        "running_var": bool(cfg.running),
    }
    return [f"{name}=self.{name}" for name in TENSOR_ARGUMENTS if name in names and present[name]]


def _identity(cfg: NormConfig) -> Forward:
    items = _tensors(cfg, TENSOR_ARGUMENTS)
    if not items:
        return Forward(indent(["return x"], BODY), "")
    return Forward(bracketed("return recover(", ["x", *items], ")", BODY), "", (core.recover,))


# ---------------------------------------------------------------------------------------------------
# The functional core.
_NOTES = {
    "folded": (
        "Runs on normsearch's ``folded_norm`` (copied below): normalization and affine fold into "
        "y = x · a + b with a, b per sample and channel, with a hand-written backward pass."
    ),
    "evo_b0": (
        "Runs on normsearch's ``evo_b0_norm`` (copied below), with a hand-written backward pass: "
        "max(d, v · x + σᵢ) = d + relu(v · x + σᵢ − d)."
    ),
    "position": (
        "Runs on normsearch's ``position_norm`` (copied below): statistics over C at each position, "
        "with a hand-written backward pass."
    ),
    "stepwise": "Runs on normsearch's ``stepwise_norm`` (copied below), step by step in plain autograd.",
}


def _groups(cfg: NormConfig) -> str:
    """G as the class holds it: ``self.groups`` for grouped partitions, else C (batch, instance: one set
    per channel) or 1 (layer, position)."""
    if cfg.partition in GROUPED_PARTITIONS:
        return "self.groups"
    return "self.num_channels" if cfg.partition in ("batch", "instance") else "1"


def _literal(value: bool | str) -> str:
    """A config choice as Python source: ``True``/``False``, or a double-quoted identifier-like string
    (the validated config's choices; anything else is refused, never pasted)."""
    if isinstance(value, bool):
        return repr(value)
    if not (isinstance(value, str) and value.isidentifier() and value.isascii()):
        raise ValueError(f"not a config choice: {value!r}")
    return f'"{value}"'


def _core_call(cfg: NormConfig, kernel: str) -> Forward:
    function = CORE_FUNCTIONS[kernel]
    items = ["x", *_tensors(cfg, tuple(inspect.signature(function).parameters))]
    if cfg.running:
        items += ["training=self.training", "momentum=self.momentum"]
    if "groups" in inspect.signature(function).parameters:
        items.append(f"groups={_groups(cfg)}")
    items += [f"{name}={_literal(value)}" for name, value in literal_options(cfg, kernel).items()]
    items.append("eps=self.eps")
    lines = indent(_count_batches(cfg), BODY) + bracketed("return self._norm(", items, ")", BODY)
    return Forward(lines, _NOTES[kernel], (function,), core=True)


_TEMPLATES: dict[str, Callable[[NormConfig], Forward]] = {
    "identity": _identity,
    "batch_norm": _batch_norm,
    "group_norm": _group_norm,
    "layer_rms_norm": _layer_rms_norm,
    "last_dim_layer_norm": _last_dim_layer_norm,
    "last_dim_rms_norm": _last_dim_rms_norm,
}
"""Fused kernels → the template that writes the torch call out."""


def forward_body(cfg: NormConfig) -> Forward:
    """The exported ``forward`` for ``cfg``: the kernel ``UnifiedNorm`` dispatches it to."""
    kernel = kernel_of(cfg)
    if kernel in CORE_FUNCTIONS:
        return _core_call(cfg, kernel)
    return _TEMPLATES[kernel](cfg)


TOKENS_FORWARD = [
    "def forward(self, x: Tensor) -> Tensor:",
    '    """x (N, *tokens, C), channels last: computed on its channels-first view (N, C, *tokens)."""',
    "    return self._forward_channels_first(x.movedim(-1, 1)).movedim(1, -1)",
]
"""The ``forward`` of a layout-``tokens`` class whose computation is written channels first (indent 0)."""
