"""The unified normalization layer: parameters, buffers and the wiring of one config to the functional
core :mod:`normsearch.norm.functional`, whose docstring states the formula.

Layout ``tokens``: an input (N, *L, C) is computed as its channels-first view (N, C, *L) and moved back
(statistics-free configs, DyT and Derf among them, as the contiguous (N·L, C) matrix instead: the same
pointwise result without strided passes);
the per-token LayerNorm/RMSNorm configs (``position``) call ``F.layer_norm`` / ``F.rms_norm`` on the last
dim. :func:`~normsearch.norm.functional.select_kernel` decides: configs that equal a torch layer run on its
fused kernel (``F.batch_norm``, ``F.group_norm``, ``F.rms_norm``; ``F.layer_norm`` for tokens), the rest
on :func:`~normsearch.norm.functional.folded_norm`, :func:`~normsearch.norm.functional.evo_b0_norm`,
:func:`~normsearch.norm.functional.position_norm` (every channels-first ``position`` config with act none or
tlu) or :func:`~normsearch.norm.functional.stepwise_norm`. ``compile=True`` runs those four through
:func:`~normsearch.norm.functional.compile_core`; eager is the exact reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as core
from .config import BATCH_PARTITIONS, DEFAULT_ALPHA, POINTWISE_ACTS, NormConfig

DYT_ALPHA = DEFAULT_ALPHA
"""DyT's default initial α (Zhu et al. 2025: 0.5 for their non-LLM models); ``alpha_init`` sets it."""

CORE_FUNCTIONS: dict[str, Callable[..., Tensor]] = {
    "folded": core.folded_norm,
    "evo_b0": core.evo_b0_norm,
    "position": core.position_norm,
    "stepwise": core.stepwise_norm,
}
"""The functional core's function for each generic kernel of :func:`~normsearch.norm.functional.select_kernel`."""

TENSOR_ARGUMENTS = (
    "weight",
    "bias",
    "tau",
    "v",
    "alpha",
    "shift",
    "running_mean",
    "running_var",
)
"""Keywords of the core functions that take the layer's parameters and buffers (same names)."""


def kernel_of(config: NormConfig) -> str:
    """The kernel :func:`~normsearch.norm.functional.select_kernel` picks for ``config``."""
    return core.select_kernel(
        partition=config.partition,
        center=config.center,
        scale=config.scale,
        act=config.act,
        affine=config.affine,
        layout=config.layout,
    )


def generic_kernel_of(config: NormConfig) -> str:
    """The core function that computes ``config`` off the fused kernels (``folded``, ``evo_b0``,
    ``position``, ``stepwise``): what :func:`kernel_of` falls back to."""
    return core.generic_kernel(
        partition=config.partition, center=config.center, act=config.act
    )


def literal_options(config: NormConfig, kernel: str) -> dict[str, Any]:
    """The keywords of ``CORE_FUNCTIONS[kernel]`` fixed by the config's choices (bools and strings of
    the validated config; the exporter writes them as literals). Tensors, ``groups``, ``eps``,
    ``training`` and ``momentum`` come from the layer."""
    options: dict[str, Any] = {"center": config.center, "scale": config.scale}
    if kernel == "stepwise":
        options = {"partition": config.partition, **options}
    elif kernel != "position":
        options = {"batch": config.partition in BATCH_PARTITIONS, **options}
    if kernel != "evo_b0":
        options["act"] = config.act
    return options


class UnifiedNorm(nn.Module):
    """One layer for every point of Π × Φ × Ψ; input (N, C, *S) with C = ``num_channels`` (layout
    ``tokens``: (N, *L, C)), output alike.

    Parameters: ``weight`` (γ, shape C), ``bias`` (β, C), ``v`` (EvoNorm, C), ``tau`` (TLU, C), ``alpha``
    (DyT and Derf, a scalar init ``alpha_init``, 0.5 by default), ``shift`` (Derf's s, a scalar init 0). Buffers with running estimates: ``running_mean``, ``running_var`` (shape C for
    ``batch``, G for ``batch_group``) and ``num_batches_tracked``: the names of ``nn.BatchNorm2d``/
    ``nn.GroupNorm``, so their state dicts load as they are. ``device`` / ``dtype`` place the parameters and
    buffers as torch's layers do (``num_batches_tracked`` stays int64). ``compile=True`` runs the functional
    core through ``torch.compile`` (fused-kernel configs are one torch call and stay as they are).
    ``kernel`` names the computation (:func:`~normsearch.norm.functional.select_kernel`).
    """

    def __init__(
        self,
        config: NormConfig,
        num_channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_channels = num_channels
        self.groups = config.num_groups(num_channels)
        c, dd = num_channels, {"device": device, "dtype": dtype}
        self.weight = (
            nn.Parameter(torch.ones(c, **dd)) if config.affine != "none" else None
        )
        self.bias = (
            nn.Parameter(torch.zeros(c, **dd)) if config.affine == "full" else None
        )
        self.v = (
            nn.Parameter(torch.ones(c, **dd))
            if config.act in ("evo_s0", "evo_b0")
            else None
        )
        self.tau = nn.Parameter(torch.zeros(c, **dd)) if config.act == "tlu" else None
        pointwise = config.act in POINTWISE_ACTS
        self.alpha = (
            nn.Parameter(torch.full((), config.alpha_init, **dd)) if pointwise else None
        )
        self.shift = (
            nn.Parameter(torch.zeros((), **dd)) if config.act == "derf" else None
        )
        if config.running:
            stats = c if config.partition == "batch" else self.groups
            self.register_buffer("running_mean", torch.zeros(stats, **dd))
            self.register_buffer("running_var", torch.ones(stats, **dd))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.kernel = kernel_of(config)
        self.compile = compile
        self._wiring: tuple[str, list[str], dict[str, Any]] | None = None
        self._channel_dim = -1 if config.layout == "tokens" else 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[self._channel_dim] != self.num_channels:
            where = (
                "(N, *tokens, {c})" if self._channel_dim == -1 else "(N, {c}, *spatial)"
            )
            hint = ""
            if self._channel_dim == 1 and x.shape[-1] == self.num_channels:
                hint = "; channels last, as transformers give them? set layout=tokens"
            raise ValueError(
                f"UnifiedNorm({self.config.spec()}) expects input {where.format(c=self.num_channels)}, "
                f"got shape {tuple(x.shape)}{hint}"
            )
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        if (
            self._channel_dim == -1 and self.kernel == "identity"
        ):  # pointwise: (N·L, C) is channels first
            return self._identity(x.reshape(-1, self.num_channels)).view(x.shape)
        if self._channel_dim == -1 and self.kernel not in core.LAST_DIM_KERNELS:
            return self._compute(x.movedim(-1, 1)).movedim(1, -1)
        return self._compute(x)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, spec={self.config.spec()!r}"

    def _compute(self, x: Tensor) -> Tensor:
        """The kernel on channels-first x (N, C, *S), or on (N, *L, C) for the last-dim kernels."""
        if self.kernel in CORE_FUNCTIONS:
            return self._core(x)
        return getattr(self, f"_{self.kernel}")(x)

    def _core(self, x: Tensor) -> Tensor:
        if (
            self._wiring is None or self._wiring[0] != self.kernel
        ):  # the kernel may be set after __init__
            names = [
                n
                for n in TENSOR_ARGUMENTS
                if n in _KEYWORDS[self.kernel] and getattr(self, n) is not None
            ]
            self._wiring = (
                self.kernel,
                names,
                literal_options(self.config, self.kernel),
            )
        kernel, names, options = self._wiring
        function = (
            _compiled(CORE_FUNCTIONS[kernel])
            if self.compile
            else CORE_FUNCTIONS[kernel]
        )
        layer = {
            "training": self.training,
            "momentum": self.config.momentum,
            "groups": self.groups,
        }
        return function(
            x,
            **{name: getattr(self, name) for name in names},
            **{
                name: value
                for name, value in layer.items()
                if name in _KEYWORDS[kernel]
            },
            eps=self.config.eps,
            **options,
        )

    # Fused kernels: configs that equal a torch layer.
    def _identity(self, x: Tensor) -> Tensor:
        """No statistics: only the recovery step (DyT, Derf, affine and TLU)."""
        return core.recover(
            x,
            weight=self.weight,
            bias=self.bias,
            tau=self.tau,
            alpha=self.alpha,
            shift=self.shift,
        )

    def _batch_norm(self, x: Tensor) -> Tensor:
        """``nn.BatchNorm2d`` (also without running estimates, i.e. batch statistics in eval mode)."""
        use_batch_stats = self.training or self.running_mean is None
        momentum = (
            self.config.momentum
            if self.training and self.running_mean is not None
            else 0.0
        )
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_batch_stats,
            momentum,
            self.config.eps,
        )

    def _group_norm(self, x: Tensor) -> Tensor:
        """``nn.GroupNorm`` (layer: G = 1, instance: G = C, group: G)."""
        return F.group_norm(x, self.groups, self.weight, self.bias, self.config.eps)

    def _last_dim_layer_norm(self, t: Tensor) -> Tensor:
        """``nn.LayerNorm(C)`` of t (..., C)."""
        return F.layer_norm(
            t, (self.num_channels,), self.weight, self.bias, self.config.eps
        )

    def _last_dim_rms_norm(self, t: Tensor) -> Tensor:
        """``nn.RMSNorm(C)`` of t (..., C)."""
        return F.rms_norm(t, (self.num_channels,), self.weight, self.config.eps)

    def _layer_rms_norm(self, x: Tensor) -> Tensor:
        """RMSNorm over (C, *S) with per-channel gain: ``F.rms_norm`` then γ."""
        y = F.rms_norm(x, x.shape[1:], None, self.config.eps)
        return y if self.weight is None else y * core.per_channel(self.weight, x)


_KEYWORDS = {
    kernel: frozenset(inspect.signature(f).parameters)
    for kernel, f in CORE_FUNCTIONS.items()
}
"""Each core function's parameter names (which of the layer's tensors it takes)."""

_COMPILED: dict[Callable, Callable] = {}


def _compiled(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """:func:`~normsearch.norm.functional.compile_core` of ``function``, made once per function (its
    compiled graphs are cached by torch)."""
    if function not in _COMPILED:
        _COMPILED[function] = core.compile_core(function)
    return _COMPILED[function]


__all__ = [
    "CORE_FUNCTIONS",
    "DYT_ALPHA",
    "TENSOR_ARGUMENTS",
    "UnifiedNorm",
    "generic_kernel_of",
    "kernel_of",
    "literal_options",
]
