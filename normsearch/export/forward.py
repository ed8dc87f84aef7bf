"""The exported layer's ``forward``: a fused torch kernel where :func:`select_kernel` picks one, else the
generic computation of :mod:`normsearch.norm.layer` assembled from one small template per piece
(statistics of the partition, running estimates, centering, scale, EvoNorm gates, affine, TLU).

Every template mirrors the operation order of ``UnifiedNorm`` so the exported layer gives the same
outputs and gradients. Lines come out at the indent of a method body and laid out as ``ruff format`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..norm import NormConfig
from ..norm import layer as kernels
from ..norm.config import GROUPED_PARTITIONS
from .codefmt import bracketed, indent

BODY = 2
"""Indent level of a method body inside the class."""


@dataclass(frozen=True)
class Forward:
    """A forward body (lines at indent :data:`BODY`), the docstring's kernel note, and whether the class
    needs the ``_update_running_stats`` method."""

    lines: list[str]
    note: str
    updates_running: bool = False
    last_dim: bool = False
    """Whether the body takes a layout ``tokens`` input (N, *L, C) as it is (else channels first)."""


# ---------------------------------------------------------------------------------------------------
# Fused kernels.
def _weight_bias(cfg: NormConfig) -> list[str]:
    return {"full": ["self.weight", "self.bias"], "gain": ["self.weight"], "none": []}[cfg.affine]


def _batch_norm(cfg: NormConfig) -> Forward:
    if cfg.running:
        items = ["x", "self.running_mean", "self.running_var", *_weight_bias(cfg)]
        items += ["training=self.training", "momentum=self.momentum", "eps=self.eps"]
        lines = indent(["if self.training:", "    self.num_batches_tracked.add_(1)"], BODY)
    else:
        items = ["x", "None", "None", *_weight_bias(cfg), "training=True", "eps=self.eps"]
        lines = []
    lines += bracketed("return F.batch_norm(", items, ")", BODY)
    return Forward(lines, "Runs on torch's fused kernel ``F.batch_norm`` (as ``nn.BatchNorm2d``).")


_GROUP_NORM_GROUPS = {"layer": "1", "instance": "self.num_channels", "group": "self.groups"}


def _group_norm(cfg: NormConfig) -> Forward:
    items = ["x", _GROUP_NORM_GROUPS[cfg.partition], *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("return F.group_norm(", items, ")", BODY)
    return Forward(lines, "Runs on torch's fused kernel ``F.group_norm`` (as ``nn.GroupNorm``).")


def _position_layer_norm(cfg: NormConfig) -> Forward:
    items = ["x.movedim(1, -1)", "(self.num_channels,)", *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("y = F.layer_norm(", items, ")", BODY) + indent(["return y.movedim(-1, 1)"], BODY)
    note = "Runs on torch's fused kernel ``F.layer_norm`` over channels-last (as ``nn.LayerNorm(C)``)."
    return Forward(lines, note)


def _position_rms_norm(cfg: NormConfig) -> Forward:
    items = ["x.movedim(1, -1)", "(self.num_channels,)", *_weight_bias(cfg), "eps=self.eps"]
    lines = bracketed("y = F.rms_norm(", items, ")", BODY) + indent(["return y.movedim(-1, 1)"], BODY)
    return Forward(
        lines, "Runs on torch's fused kernel ``F.rms_norm`` over channels-last (as ``nn.RMSNorm(C)``)."
    )


def _layer_rms_norm(cfg: NormConfig) -> Forward:
    lines = ["y = F.rms_norm(x, x.shape[1:], eps=self.eps)"]
    lines.append("return y * _per_channel(self.weight, y)" if cfg.affine == "gain" else "return y")
    return Forward(indent(lines, BODY), "Runs on torch's fused kernel ``F.rms_norm`` over (C, *S).")


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


def _identity(cfg: NormConfig) -> Forward:
    lines = _recovery(cfg, "x")
    lines.append("return y" if lines else "return x")
    return Forward(indent(lines, BODY), "")


# ---------------------------------------------------------------------------------------------------
# Generic path, piece by piece.
_DIMS = {
    "batch": ("(0, *range(2, xf.dim()))", "N, *S of each channel"),
    "batch_group": ("(0, *range(2, xg.dim()))", "N, C/G, *S of each group"),
    "layer": ("tuple(range(1, xf.dim()))", "C, *S of each sample"),
    "instance": ("tuple(range(2, xg.dim()))", "*S of each sample and channel"),
    "group": ("tuple(range(2, xg.dim()))", "C/G, *S of each sample and group"),
    "position": ("(1,)", "C of each sample and position"),
}
"""Π: the dims reduced over, of xf (N, C, *S) or of its grouped view xg (N, G, C/G, *S)."""

_VIEWED = (*GROUPED_PARTITIONS, "instance")
"""Partitions whose statistics are taken on a view xg: instance is group with G = C, which keeps the
reduced dims non-empty for inputs without *S (``dim=()`` would reduce over everything)."""


def _mean_var(t: str) -> list[str]:
    """μ and biased σ² of ``t`` over ``dims`` in two passes, as ``UnifiedNorm``'s ``_Moments`` (as stable as
    ``torch.var_mean``, and 8× faster on CPU)."""
    return [
        f"mean = {t}.mean(dim=dims, keepdim=True)",
        f"var = ({t} - mean).square().mean(dim=dims, keepdim=True)",
    ]


def _partition(cfg: NormConfig) -> list[str]:
    """``xf`` (float32 input), ``xg`` for grouped partitions, and ``dims``."""
    lines = ["xf = x.float()  # statistics in float32 whatever the input dtype"]
    if cfg.partition in GROUPED_PARTITIONS:
        lines += [
            "n, c, *spatial = xf.shape",
            "xg = xf.reshape(n, self.groups, c // self.groups, *spatial)",
        ]
    elif cfg.partition == "instance":
        lines.append("xg = xf.unsqueeze(2)  # (N, C, 1, *S): one group per channel")
    dims, comment = _DIMS[cfg.partition]
    return [*lines, f"dims = {dims}  # {comment}"]


def _statistics(cfg: NormConfig, t: str) -> list[str]:
    """μ (``mean``), σ² (``var``) or E[x²] (``mean_square``): only those the config uses."""
    if cfg.running:
        return [
            "if self.training:",
            *(f"    {line}" for line in _mean_var(t)),
            f"    self._update_running_stats(mean, var, {t}.numel() // mean.numel())",
            "else:",
            f"    mean = _per_channel(self.running_mean, {t})",
            f"    var = _per_channel(self.running_var, {t})",
        ]
    if cfg.scale == "std" and not cfg.center:
        return _mean_var(t)
    if cfg.scale == "rms" and not cfg.center:
        return [f"mean_square = {t}.square().mean(dim=dims, keepdim=True)"]
    if cfg.scale == "none":
        return [f"mean = {t}.mean(dim=dims, keepdim=True)"]
    return _mean_var(t)


def _denominator(cfg: NormConfig) -> list[str]:
    """``den`` for scale = std | rms (none of it for scale = none)."""
    if cfg.scale == "std":
        return ["den = torch.sqrt(var + self.eps)"]
    if cfg.scale == "rms" and (cfg.running or cfg.center):
        return ["den = torch.sqrt(var + mean.square() + self.eps)  # E[x²] = σ² + μ²"]
    if cfg.scale == "rms":
        return ["den = torch.sqrt(mean_square + self.eps)"]
    return []


def _normalized(cfg: NormConfig, t: str) -> list[str]:
    """``y`` (N, C, *S): centered and scaled, with the EvoNorm-B0 denominator where it applies."""
    grouped = cfg.partition in _VIEWED
    num = f"({t} - mean)" if cfg.center else t
    if cfg.act == "evo_b0":
        lines = ["den = den.expand_as(xg).reshape(xf.shape)"] if grouped else []
        return lines + [
            "v = _per_channel(self.v.float(), xf)",
            "_, instance_var = _moments(xf, self.num_channels, self.eps)",
            "instance_std = _map(torch.sqrt(instance_var + self.eps), xf)",
            "den = torch.maximum(den, v * xf + instance_std)",
            f"y = {num}.reshape(xf.shape) / den" if grouped else f"y = {num} / den",
        ]
    if cfg.scale == "none":
        return [f"y = {num}.reshape(xf.shape)" if grouped else f"y = {num.strip('()')}"]
    return [f"y = ({num} / den).reshape(xf.shape)" if grouped else f"y = {num} / den"]


def _gate(cfg: NormConfig) -> list[str]:
    if cfg.act == "evo_s0":
        return ["y = y * torch.sigmoid(_per_channel(self.v.float(), xf) * xf)"]
    return []


def _recovery(cfg: NormConfig, source: str) -> list[str]:
    """Ψ: DyT's tanh, per-channel affine then TLU, applied to ``source`` and kept in ``y`` (no lines if
    nothing to do)."""
    dyt = []
    if cfg.act == "dyt":
        dyt, source = [f"y = torch.tanh(self.alpha * {source})  # DyT"], "y"
    lines = (
        dyt
        + {
            "full": [
                f"y = {source} * _per_channel(self.weight, {source}) + _per_channel(self.bias, {source})"
            ],
            "gain": [f"y = {source} * _per_channel(self.weight, {source})"],
            "none": [],
        }[cfg.affine]
    )
    if cfg.act == "tlu":
        lines += _tlu("y" if lines else source)
    return lines


def _tlu(source: str) -> list[str]:
    """TLU, max(source, τ), written as τ + relu(source − τ) like ``UnifiedNorm``: its backward is one
    threshold (``torch.maximum`` splits ties and is 3–4× slower on CPU); at ties τ gets the gradient."""
    return [
        f"tau = _per_channel(self.tau, {source})",
        f"y = tau + torch.relu({source} - tau)  # max({source}, τ)",
    ]


# ---------------------------------------------------------------------------------------------------
# Folded generic path: statistics constant per (sample, channel), as UnifiedNorm's ``_Folded``.
_SETS = {
    "batch": "self.num_channels",
    "batch_group": "self.groups",
    "layer": "1",
    "instance": "self.num_channels",
    "group": "self.groups",
}
"""Π for the folded path: how many channel groups of each sample ``_moments`` takes statistics of (batch
partitions then pool them over the samples)."""
_MOMENTS_NOTE = (
    "Statistics come from one pass of torch's fused group-norm kernel (``torch.var_mean`` is about 10× "
    "slower on CPU), as normsearch's own layer computes them."
)


def _set_statistics(cfg: NormConfig) -> list[str]:
    """``mean`` and ``var`` of each (sample, channel)'s statistics set, (N or 1, C); running estimates in
    eval mode."""
    sets = _SETS[cfg.partition]
    batch = cfg.partition in ("batch", "batch_group")
    moments = [f"# μ and σ² over {_DIMS[cfg.partition][1]}", f"mean, var = _moments(xf, {sets}, self.eps)"]
    if batch:
        moments.append("mean, var = _pooled(mean, var)")
    lines = moments
    if cfg.running:
        lines = [
            "if self.training:",
            *(f"    {line}" for line in moments),
            "    self._update_running_stats(mean, var, xf.numel() // mean.numel())",
            "else:",
            "    mean = self.running_mean.view(1, -1).float()",
            "    var = self.running_var.view(1, -1).float()",
        ]
    if cfg.partition not in ("batch", "instance"):
        lines += [
            "mean = _to_channels(mean, self.num_channels)",
            "var = _to_channels(var, self.num_channels)",
        ]
    return lines


def _folded_coefficients(cfg: NormConfig) -> tuple[list[str], bool, bool]:
    """Lines for a = γ / d and b = β − μ · a per (sample, channel), and whether a and b exist."""
    lines = []
    if cfg.scale == "std":
        lines.append("r = torch.rsqrt(var + self.eps)  # 1 / d")
    elif cfg.scale == "rms":
        lines.append("r = torch.rsqrt(var + mean.square() + self.eps)  # 1 / d, E[x²] = σ² + μ²")
    factors = (["r"] if cfg.scale != "none" else []) + (["self.weight"] if cfg.affine != "none" else [])
    if factors == ["self.weight"]:
        lines.append("a = self.weight.view(1, -1)")
    elif factors:
        lines.append(f"a = {' * '.join(factors)}")
    has_a = bool(factors)
    bias = cfg.affine == "full"
    if cfg.center:
        mean_term = "mean * a" if has_a else "mean"
        lines.append(f"b = self.bias - {mean_term}" if bias else f"b = -{mean_term}")
    elif bias:
        lines.append("b = self.bias.view(1, -1)")
    return lines, has_a, cfg.center or bias


def _folded(cfg: NormConfig) -> Forward:
    coefficients, has_a, has_b = _folded_coefficients(cfg)
    lines = ["xf = x.float()  # statistics in float32 whatever the input dtype"]
    lines += _set_statistics(cfg) + coefficients
    h = "xf"
    if cfg.act == "evo_s0":
        lines.append("h = xf * torch.sigmoid(_per_channel(self.v.float(), xf) * xf)")
        h = "h"
    if has_a and has_b:
        lines.append(f"y = torch.addcmul(_map(b, xf), {h}, _map(a, xf))  # x · a + b")
    elif has_a:
        lines.append(f"y = {h} * _map(a, xf)")
    elif has_b:
        lines.append(f"y = {h} + _map(b, xf)")
    else:
        lines.append(f"y = {h}")
    if cfg.act == "tlu":
        lines += _tlu("y")
    lines.append("return y.to(x.dtype)")
    note = (
        _MOMENTS_NOTE + " Normalization and affine fold into y = x · a + b with a, b per sample and channel."
    )
    return Forward(indent(lines, BODY), note, updates_running=bool(cfg.running))


def _evo_b0(cfg: NormConfig) -> Forward:
    """EvoNorm-B0's elementwise denominator on set statistics constant per (sample, channel), as
    ``UnifiedNorm``'s ``_EvoB0``: max(d, v · x + σᵢ) = d + relu(v · x + σᵢ − d)."""
    d = "torch.sqrt(var + self.eps)" if cfg.scale == "std" else "torch.sqrt(var + mean.square() + self.eps)"
    lines = ["xf = x.float()  # statistics in float32 whatever the input dtype", *_set_statistics(cfg)]
    lines += [
        f"d = {d}  # (N or 1, C)",
        "_, instance_var = _moments(xf, self.num_channels, self.eps)",
        "instance_std = torch.sqrt(instance_var + self.eps)",
        "v = _per_channel(self.v.float(), xf)",
        "u = v * xf + _map(instance_std - d, xf)",
        "den = _map(d, xf) + torch.relu(u)  # max(d, v · x + instance std)",
        "y = (xf - _map(mean, xf)) / den" if cfg.center else "y = xf / den",
    ]
    lines += _recovery(cfg, "y") + ["return y.to(x.dtype)"]
    return Forward(indent(lines, BODY), _MOMENTS_NOTE, updates_running=bool(cfg.running))


def _generic(cfg: NormConfig) -> Forward:
    t = "xg" if cfg.partition in _VIEWED else "xf"
    lines = _partition(cfg) + _statistics(cfg, t) + _denominator(cfg) + _normalized(cfg, t) + _gate(cfg)
    lines += _recovery(cfg, "y") + ["return y.to(x.dtype)"]
    return Forward(indent(lines, BODY), "", updates_running=bool(cfg.running))


_TEMPLATES: dict[Callable, Callable[[NormConfig], Forward]] = {
    kernels._batch_norm_kernel: _batch_norm,
    kernels._group_norm_kernel: _group_norm,
    kernels._position_layer_norm_kernel: _position_layer_norm,
    kernels._position_rms_norm_kernel: _position_rms_norm,
    kernels._layer_rms_norm_kernel: _layer_rms_norm,
    kernels._identity_kernel: _identity,
    kernels._last_dim_layer_norm: _last_dim_layer_norm,
    kernels._last_dim_rms_norm: _last_dim_rms_norm,
    kernels._generic_kernel: _generic,
}
"""``UnifiedNorm``'s kernels → the template that writes the same computation out."""


def forward_body(cfg: NormConfig) -> Forward:
    """The exported ``forward`` for ``cfg``: the same kernel ``UnifiedNorm`` dispatches it to; its generic
    kernel as ``_Folded`` (x · a + b) or ``_EvoB0`` compute it where they apply, else step by step."""
    kernel = kernels.select_kernel(cfg)
    if kernel is kernels._generic_kernel and kernels._foldable(cfg):
        return _folded(cfg)
    if kernel is kernels._generic_kernel and cfg.act == "evo_b0" and cfg.partition != "position":
        return _evo_b0(cfg)
    return _TEMPLATES[kernel](cfg)


TOKENS_FORWARD = [
    "def forward(self, x: Tensor) -> Tensor:",
    '    """x (N, *tokens, C), channels last: computed on its channels-first view (N, C, *tokens)."""',
    "    return self._forward_channels_first(x.movedim(-1, 1)).movedim(1, -1)",
]
"""The ``forward`` of a layout-``tokens`` class whose computation is written channels first (indent 0)."""

UPDATE_RUNNING_STATS = [
    "@torch.no_grad()",
    "def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:",
    '    """running ← (1 - momentum) · running + momentum · batch value (σ² unbiased, as torch)."""',
    "    self.num_batches_tracked.add_(1)",
    "    self.running_mean.lerp_(mean.flatten().to(self.running_mean), self.momentum)",
    "    unbiased_var = var.flatten() * (count / max(count - 1, 1))",
    "    self.running_var.lerp_(unbiased_var.to(self.running_var), self.momentum)",
]
"""The running-estimate update of the generic path (method lines at indent 0)."""

FOLDED_HELPERS = {
    "_moments": [
        "def _moments(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor]:",
        '    """Mean and biased variance, each (N, groups), of each sample\'s channel groups of x (N, C, *S).',
        "",
        "    One pass of torch's fused group-norm kernel, which also differentiates through its mean and",
        "    rstd = (var + eps)^(-1/2).",
        '    """',
        "    n, c, hw = x.shape[0], x.shape[1], x.shape[2:].numel()",
        "    kernel = torch.ops.aten.native_group_norm",
        "    _, mean, rstd = kernel(x, None, None, n, c, hw, groups, eps)",
        "    return mean, rstd.pow(-2) - eps",
    ],
    "_pooled": [
        "def _pooled(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:",
        '    """Moments (1, G) over all samples from equal-sized per-sample moments (N, G)."""',
        "    pooled = mean.mean(0, keepdim=True)",
        "    spread = (mean - pooled).square().mean(0, keepdim=True)",
        "    return pooled, var.mean(0, keepdim=True) + spread",
    ],
    "_to_channels": [
        "def _to_channels(t: Tensor, c: int) -> Tensor:",
        '    """A value per channel group (N or 1, G) repeated over its channels: (N or 1, C)."""',
        "    return t.repeat_interleave(c // t.shape[1], dim=1)",
    ],
    "_map": [
        "def _map(t: Tensor, x: Tensor) -> Tensor:",
        '    """A value per (sample, channel), (N or 1, C), viewed to broadcast against x (N, C, *S)."""',
        "    return t.view(*t.shape, *([1] * (x.dim() - 2)))",
    ],
}
"""Module-level helpers of the folded path, each emitted when the class uses it."""

PER_CHANNEL = [
    "def _per_channel(p: Tensor, x: Tensor) -> Tensor:",
    '    """p of shape (C,) viewed as (1, C, 1, ..., 1) to broadcast against x of shape (N, C, *S)."""',
    "    return p.view(1, -1, *([1] * (x.dim() - 2)))",
]
"""Module-level helper, emitted when the class uses it."""
