"""The unified normalization layer.

For an input x of shape (N, C, *S) and a partition Π into sets of elements that share statistics:

    μ = E_Π[x],  σ² = E_Π[(x - μ)²] (biased),  m₂ = E_Π[x²]
    x̃ = x - μ                   if center else x
    d = sqrt(σ² + eps)          if scale = std
        sqrt(m₂ + eps)          if scale = rms
        1                       if scale = none
    d ← max(d, v·x + sqrt(σ²_instance + eps))      if act = evo_b0
    x̃ ← x̃ · sigmoid(v·x)                           if act = evo_s0
    y = γ · x̃ / d + β           (γ, β per channel; affine = full | gain | none)
    y ← max(y, τ)               if act = tlu
    (act = dyt: y = γ · tanh(α · x̃ / d) + β, α a learnable scalar; Dynamic Tanh with partition none)

Layout ``tokens``: an input (N, *L, C) is computed as its channels-first view (N, C, *L) and moved back; the
per-token LayerNorm/RMSNorm configs (``position``) call ``F.layer_norm`` / ``F.rms_norm`` on the last dim.
Batch partitions keep running estimates of μ and σ² (σ² updated unbiased, as torch does) and use them in
eval mode; m₂ is then running σ² + running μ². Statistics are computed in float32 whatever the input dtype.
Configs that equal a torch layer run on its fused kernel (``F.batch_norm``, ``F.group_norm``,
``F.layer_norm``, ``F.rms_norm``); the rest on the generic path above.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .config import BATCH_PARTITIONS, NormConfig

DYT_ALPHA = 0.5
"""DyT's initial α (Zhu et al. 2025: 0.5 for their non-LLM models)."""


class UnifiedNorm(nn.Module):
    """One layer for every point of Π × Φ × Ψ; input (N, C, *S) with C = ``num_channels`` (layout
    ``tokens``: (N, *L, C)), output alike.

    Parameters: ``weight`` (γ, shape C), ``bias`` (β, C), ``v`` (EvoNorm, C), ``tau`` (TLU, C), ``alpha``
    (DyT, a scalar init 0.5). Buffers with running estimates: ``running_mean``, ``running_var`` (shape C for
    ``batch``, G for ``batch_group``) and ``num_batches_tracked``: the names of ``nn.BatchNorm2d``/
    ``nn.GroupNorm``, so their state dicts load as they are. ``device`` / ``dtype`` place the parameters and
    buffers as torch's layers do (``num_batches_tracked`` stays int64).
    """

    def __init__(
        self,
        config: NormConfig,
        num_channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_channels = num_channels
        self.groups = config.num_groups(num_channels)
        c, dd = num_channels, {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(c, **dd)) if config.affine != "none" else None
        self.bias = nn.Parameter(torch.zeros(c, **dd)) if config.affine == "full" else None
        self.v = nn.Parameter(torch.ones(c, **dd)) if config.act in ("evo_s0", "evo_b0") else None
        self.tau = nn.Parameter(torch.zeros(c, **dd)) if config.act == "tlu" else None
        self.alpha = nn.Parameter(torch.full((), DYT_ALPHA, **dd)) if config.act == "dyt" else None
        if config.running:
            stats = c if config.partition == "batch" else self.groups
            self.register_buffer("running_mean", torch.zeros(stats, **dd))
            self.register_buffer("running_var", torch.ones(stats, **dd))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._kernel = select_kernel(config)
        self._channel_dim = -1 if config.layout == "tokens" else 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[self._channel_dim] != self.num_channels:
            where = "(N, *tokens, {c})" if self._channel_dim == -1 else "(N, {c}, *spatial)"
            hint = ""
            if self._channel_dim == 1 and x.shape[-1] == self.num_channels:
                hint = "; channels last, as transformers give them? set layout=tokens"
            raise ValueError(
                f"UnifiedNorm({self.config.spec()}) expects input {where.format(c=self.num_channels)}, "
                f"got shape {tuple(x.shape)}{hint}"
            )
        if self._channel_dim == -1 and self._kernel not in _LAST_DIM_KERNELS:
            return self._kernel(self, x.movedim(-1, 1)).movedim(1, -1)
        return self._kernel(self, x)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, spec={self.config.spec()!r}"

    def _running_update_factor(self) -> float:
        """Momentum for this step, counting the step as torch's batch norm does."""
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return self.config.momentum


Kernel = Callable[[UnifiedNorm, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------------
# Fused kernels: configs that equal a torch layer.
def _batch_norm_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """``nn.BatchNorm2d`` (also without running estimates, i.e. batch statistics in eval mode)."""
    use_batch_stats = m.training or m.running_mean is None
    momentum = m._running_update_factor() if m.training and m.running_mean is not None else 0.0
    return F.batch_norm(
        x, m.running_mean, m.running_var, m.weight, m.bias, use_batch_stats, momentum, m.config.eps
    )


def _group_norm_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """``nn.GroupNorm`` (layer: G = 1, instance: G = C, group: G)."""
    return F.group_norm(x, m.groups, m.weight, m.bias, m.config.eps)


def _channels_last(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    return fn(x.movedim(1, -1)).movedim(-1, 1)


def _last_dim_layer_norm(m: UnifiedNorm, t: Tensor) -> Tensor:
    """``nn.LayerNorm(C)`` of t (..., C)."""
    return F.layer_norm(t, (m.num_channels,), m.weight, m.bias, m.config.eps)


def _last_dim_rms_norm(m: UnifiedNorm, t: Tensor) -> Tensor:
    """``nn.RMSNorm(C)`` of t (..., C)."""
    return F.rms_norm(t, (m.num_channels,), m.weight, m.config.eps)


def _position_layer_norm_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """LayerNorm over C at each position (``F.layer_norm`` on channels-last)."""
    return _channels_last(lambda t: _last_dim_layer_norm(m, t), x)


def _position_rms_norm_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """RMSNorm over C at each position (``F.rms_norm`` on channels-last)."""
    return _channels_last(lambda t: _last_dim_rms_norm(m, t), x)


def _layer_rms_norm_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """RMSNorm over (C, *S) with per-channel gain: ``F.rms_norm`` then γ."""
    y = F.rms_norm(x, x.shape[1:], None, m.config.eps)
    return y if m.weight is None else y * _per_channel(m.weight, x)


def _identity_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """No statistics: only the recovery step (affine and TLU) is applied."""
    return _recover(m, x)


# ---------------------------------------------------------------------------------------------------
# Generic path.
def _per_channel(p: Tensor, x: Tensor) -> Tensor:
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def _grouped_view(m: UnifiedNorm, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """x viewed as (N, G, C/G, *S) and the dims Π reduces over in that view."""
    n, c, *spatial = x.shape
    spatial_dims = tuple(range(3, 3 + len(spatial)))
    reduce_dims = {
        "batch": (0, 2, *spatial_dims),
        "batch_group": (0, 2, *spatial_dims),
        "layer": (1, 2, *spatial_dims),
        "instance": (2, *spatial_dims),
        "group": (2, *spatial_dims),
        "position": (1, 2),
    }[m.config.partition]
    return x.reshape(n, m.groups, c // m.groups, *spatial), reduce_dims


class _Moments(torch.autograd.Function):
    """(μ, σ²) = mean and biased variance of x over ``dims`` (keepdim), with a one-pass backward.

    Forward in two passes, μ = mean(x) then σ² = mean((x − μ)²): as stable as ``torch.var_mean``'s Welford
    pass and 8× faster on CPU for a (64, 64, 32, 32) input reduced over C (2.4 vs 19 ms).
    ∂L/∂x = g_μ / n + 2 (x − μ) g_σ² / n, computed as x · c₂ + c₁ (the form of torch's own group-norm
    backward) instead of autograd's generic variance backward, which costs several full passes.
    """

    @staticmethod
    def forward(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        mean = x.mean(dim=dims, keepdim=True)
        return mean, (x - mean).square_().mean(dim=dims, keepdim=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _ = inputs
        mean, _ = output
        ctx.save_for_backward(x, mean)
        ctx.count = x.numel() // mean.numel()

    @staticmethod
    def backward(ctx, grad_mean: Tensor | None, grad_var: Tensor | None) -> tuple[Tensor, None]:
        x, mean = ctx.saved_tensors
        grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
        if grad_var is None:
            return (grad_mean / ctx.count).expand_as(x), None
        c2 = grad_var * (2 / ctx.count)
        c1 = grad_mean / ctx.count - mean * c2
        return torch.addcmul(c1, x, c2), None


def _statistics(m: UnifiedNorm, xg: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """(μ, σ²) over ``dims`` of the grouped view, keepdim; running estimates in eval mode."""
    stat_shape = [1 if d in dims else s for d, s in enumerate(xg.shape)]
    if m.running_mean is not None and not m.training:
        return m.running_mean.view(stat_shape), m.running_var.view(stat_shape)
    mean, var = _Moments.apply(xg, dims)
    if m.running_mean is not None:
        _update_running(m, mean, var, xg.numel() // mean.numel())
    return mean, var


def _update_running(m: UnifiedNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """running ← (1 − momentum) · running + momentum · batch value (σ² unbiased over ``count`` elements)."""
    momentum = m._running_update_factor()
    with torch.no_grad():
        m.running_mean.lerp_(mean.reshape(-1).to(m.running_mean.dtype), momentum)
        unbiased = var.reshape(-1) * (count / max(count - 1, 1))
        m.running_var.lerp_(unbiased.to(m.running_var.dtype), momentum)


def _maximum(a: Tensor, b: Tensor) -> Tensor:
    """max(a, b) as b + relu(a - b): same values, and a backward that is one threshold instead of
    ``torch.maximum``'s tie-splitting masks (3-4× faster on CPU). At ties the gradient goes to b."""
    return b + torch.relu(a - b)


def _recover(m: UnifiedNorm, y: Tensor) -> Tensor:
    """Ψ: DyT's tanh(α · y), per-channel affine, then TLU."""
    if m.alpha is not None:
        y = torch.tanh(m.alpha * y)
    if m.weight is not None:
        y = y * _per_channel(m.weight, y)
    if m.bias is not None:
        y = y + _per_channel(m.bias, y)
    if m.tau is not None:
        y = _maximum(y, _per_channel(m.tau, y))
    return y


def _denominator(cfg: NormConfig, mean: Tensor, var: Tensor) -> Tensor | None:
    if cfg.scale == "std":
        return torch.sqrt(var + cfg.eps)
    if cfg.scale == "rms":
        return torch.sqrt(var + mean.square() + cfg.eps)
    return None


# ---------------------------------------------------------------------------------------------------
# Folded generic path: statistics constant per (sample, channel).
def _group_moments(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance of each (sample, group) of x (N, C, *S) over (C/G, *S), shapes (N, G),
    and a scratch tensor shaped like x (the kernel's normalized output, to be overwritten).

    From torch's group-norm kernel: one vectorized Welford pass (``torch.var_mean`` is ~15× slower on
    CPU). It returns rstd = (σ² + eps)^(-1/2), so σ² = rstd⁻² − eps, exact up to the rounding of σ² + eps.
    """
    n, c, *spatial = x.shape
    out, mean, rstd = torch.ops.aten.native_group_norm(x, None, None, n, c, math.prod(spatial), groups, eps)
    return mean, rstd.pow(-2) - eps, out


def _row_sums(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ t · x, Σ t) over *S for t, x (N, C, *S) contiguous: shapes (N, C), in one pass, no temporary.

    Torch's group-norm backward with one group per (sample, channel) row, mean 0 and rstd 1 returns exactly
    these as its γ and β gradients.
    """
    n, c, *spatial = x.shape
    rows = n * c
    zeros, ones = x.new_zeros(1, rows), x.new_ones(1, rows)
    _, dot, total = torch.ops.aten.native_group_norm_backward(
        t, x, zeros, ones, None, 1, rows, math.prod(spatial), rows, [False, True, True]
    )
    return dot.view(n, c), total.view(n, c)


def _spatial_sum(t: Tensor) -> Tensor:
    """Σ over *S of t (N, C, *S): (N, C), a new tensor (also for no *S, where ``sum(dim=())`` would
    reduce over everything)."""
    return t.reshape(*t.shape[:2], -1).sum(2)


def _pooled(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Moments (1, G) of each set pooled over the samples from equal-sized per-sample moments (N, G):
    μ = mean of the μₙ, σ² = mean of the σ²ₙ + mean of (μₙ − μ)²."""
    pooled = mean.mean(0, keepdim=True)
    return pooled, var.mean(0, keepdim=True) + (mean - pooled).square().mean(0, keepdim=True)


def _to_channels(stat: Tensor, c: int) -> Tensor:
    """A per-set value (N or 1, G) repeated over each group's channels: (N or 1, C)."""
    return stat.repeat_interleave(c // stat.shape[1], dim=1)


def _to_sets(value: Tensor, groups: int, batch: bool) -> Tensor:
    """Σ of a per-(sample, channel) value (N, C) over each statistics set: (1, G) if ``batch`` else (N, G)."""
    sums = value.reshape(value.shape[0], groups, -1).sum(2)
    return sums.sum(0, keepdim=True) if batch else sums


def _as_map(t: Tensor, x: Tensor) -> Tensor:
    """(N or 1, C) viewed as (N or 1, C, 1, ...) to broadcast against x (N, C, *S)."""
    return t.view(*t.shape, *([1] * (x.dim() - 2)))


class _Folded(torch.autograd.Function):
    """The generic formula for statistics constant per (sample, channel), i.e. every partition but
    ``position``, and act none, tlu or (uncentered) evo_s0, with an analytic backward.

    With μ, σ² and d of the module docstring expanded to (N or 1, C), normalization and affine fold into
    a = γ / d and b = β − μ · a (the μ term only if center; γ = 1, β = 0 where absent), and

        z = x · a + b                     (act none)
        z = max(x · a + b, τ)             (act tlu; at ties the gradient goes to τ)
        z = x · s · a + b                 (act evo_s0, s = sigmoid(v · x))

    Backward: with h the term a multiplies (x, or x · s), the per-(sample, channel) sums Σ g · h and Σ g
    are ∂L/∂a and ∂L/∂b, which give the gradients of γ, β, μ and σ² by small-tensor algebra; then
    ∂L/∂x = g · a (times the gate's derivative) + x · c₂ + c₁ with c₁, c₂ per (sample, channel): the form
    of torch's group-norm backward. Full-size temporaries are few and reused in place (on CPU each fresh
    one costs about as much as several passes).

    Inputs: x (N, C, *S) float32 contiguous; γ, β, τ, v of shape C or None; running μ, σ² (shape G) to use
    instead of batch statistics, or None; the config and G. Outputs: z (N, C, *S) and the batch (μ, σ²)
    of each set, (N or 1, G) (not differentiable; for the running estimates). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, tau, v, running_mean, running_var, cfg, groups):
        c = x.shape[1]
        if running_mean is None:
            mean_s, var_s, z = _group_moments(x, groups, cfg.eps)
            if cfg.partition in BATCH_PARTITIONS:
                mean_s, var_s = _pooled(mean_s, var_s)
        else:
            mean_s, var_s, z = running_mean.view(1, -1).float(), running_var.view(1, -1).float(), None
        mu, var = _to_channels(mean_s, c), _to_channels(var_s, c)
        r = _inverse_denominator(cfg, mu, var)
        a = torch.ones_like(mu) if r is None else r
        if weight is not None:
            a = a * weight
        b = -mu * a if cfg.center else torch.zeros_like(mu)
        if bias is not None:
            b = b + bias
        am, bm = _as_map(a, x), _as_map(b, x)
        z = torch.empty_like(x) if z is None else z
        gate = None
        if cfg.act == "evo_s0":
            gate = torch.mul(x, _per_channel(v, x)).sigmoid_()
            torch.mul(x, gate, out=z).mul_(am).add_(bm)
        else:
            torch.addcmul(bm, x, am, out=z)
        if cfg.act == "tlu":
            z.clamp_(min=_per_channel(tau, x))
        ctx.save_for_backward(x, mean_s, mu, r, a, b, weight, tau, v, gate)
        ctx.cfg, ctx.groups, ctx.fixed = cfg, groups, running_mean is not None
        ctx.mark_non_differentiable(mean_s, var_s)
        return z, mean_s, var_s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, mean_s, mu, r, a, b, weight, tau, v, gate = ctx.saved_tensors
        cfg = ctx.cfg
        g = grad.contiguous()
        am = _as_map(a, x)
        grad_tau = grad_v = None
        if cfg.act == "tlu":  # u = x · a + b − τ > 0 where z took x · a + b; the rest of g goes to τ
            g_in = torch.addcmul(_as_map(b, x) - _per_channel(tau, x), x, am)
            torch.ops.aten.threshold_backward(g, g_in, 0.0, grad_input=g_in)
            p, q = _row_sums(g_in, x)
            grad_tau = (_spatial_sum(g) - q).sum(0)
            grad_x = g_in.mul_(am)
        elif cfg.act == "evo_s0":  # h = x · s; ∂h/∂x = s + v · x · s (1 − s), ∂h/∂v = x² · s (1 − s)
            g_x = torch.mul(g, x)
            p, q = _row_sums(g_x, gate)[0], _spatial_sum(g)
            w = torch.ops.aten.sigmoid_backward(g_x, gate, grad_input=g_x)  # g · x · s (1 − s)
            grad_v = (a * _row_sums(w, x)[0]).sum(0)
            grad_x = w.mul_(_per_channel(v, x)).addcmul_(g, gate).mul_(am)
        else:
            p, q = _row_sums(g, x)
            grad_x = g * am if ctx.fixed else None
        p_centered = p - mu * q if cfg.center else p  # Σ g · (h − μ), h − μ = (z − β) / a
        grad_weight = (p_centered if r is None else p_centered * r).sum(0) if weight is not None else None
        grad_bias = q.sum(0) if ctx.needs_input_grad[2] else None
        if not ctx.fixed:
            grad_mu, grad_var = _moment_grads(cfg, mu, r, a, weight, p_centered, q)
            batch, count = cfg.partition in BATCH_PARTITIONS, x.numel() // mean_s.numel()
            c1, c2 = map(
                _as_map, _through_moments(grad_mu, grad_var, mean_s, ctx.groups, batch, count), (x, x)
            )
            if grad_x is None:
                grad_x = torch.addcmul(c1, g, am).addcmul_(x, c2)
            else:
                grad_x.addcmul_(x, c2).add_(c1)
        return grad_x, grad_weight, grad_bias, grad_tau, grad_v, None, None, None, None


class _EvoB0(torch.autograd.Function):
    """act = evo_b0 for statistics constant per (sample, channel), with an analytic backward. With d of the
    module docstring (N or 1, C) and σᵢ = sqrt(instance σ² + eps) (N, C):

        D = max(d, v · x + σᵢ) = d + relu(u),  u = v · x + σᵢ − d   (at ties the gradient goes to d)
        z = γ · (x − μ) / D + β                                      (μ term only if center)

    Backward: with k = g · (x − μ) / D² and kₑ = k where u > 0, the per-(sample, channel) sums of
    g · (x − μ) / D, g / D, g, k, kₑ and kₑ · x give the gradients of γ, β, v, d, σᵢ and μ, and
    ∂L/∂x = γ · (g / D − v · kₑ) + x · c₂ + c₁ through the set and instance moments.

    Inputs and outputs as :class:`_Folded`, without τ. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, v, running_mean, running_var, cfg, groups):
        c = x.shape[1]
        inst_mean, inst_var, u = _group_moments(x, c, cfg.eps)
        if running_mean is not None:
            mean_s, var_s = running_mean.view(1, -1).float(), running_var.view(1, -1).float()
        else:
            mean_s, var_s = (inst_mean, inst_var) if groups == c else _group_moments(x, groups, cfg.eps)[:2]
            if cfg.partition in BATCH_PARTITIONS:
                mean_s, var_s = _pooled(mean_s, var_s)
        mu = _to_channels(mean_s, c)
        d = _denominator(cfg, mu, _to_channels(var_s, c))
        inst_std = torch.sqrt(inst_var + cfg.eps)
        torch.mul(x, _per_channel(v, x), out=u).add_(_as_map(inst_std - d, x))
        z = torch.relu(u).add_(_as_map(d, x))
        torch.div(x - _as_map(mu, x) if cfg.center else x, z, out=z)
        if weight is not None:
            z.mul_(_per_channel(weight, x))
        if bias is not None:
            z.add_(_per_channel(bias, x))
        ctx.save_for_backward(x, u, mean_s, mu, d, inst_mean, inst_std, weight, v)
        ctx.cfg, ctx.groups, ctx.fixed = cfg, groups, running_mean is not None
        ctx.mark_non_differentiable(mean_s, var_s)
        return z, mean_s, var_s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, u, mean_s, mu, d, inst_mean, inst_std, weight, v = ctx.saved_tensors
        cfg, c = ctx.cfg, x.shape[1]
        g = grad.contiguous()
        num = x - _as_map(mu, x) if cfg.center else x
        den = torch.relu(u).add_(_as_map(d, x))
        g_den = torch.div(g, den)
        gy, g_den_sum = _row_sums(g_den, num)
        k = torch.div(g_den, den, out=den).mul_(num)
        k_sum = _spatial_sum(k)
        torch.ops.aten.threshold_backward(k, u, 0.0, grad_input=k)  # kₑ
        ke_x, ke_sum = _row_sums(k, x)
        gamma = x.new_ones(c) if weight is None else weight
        grad_weight = gy.sum(0) if weight is not None else None
        grad_bias = _spatial_sum(g).sum(0) if ctx.needs_input_grad[2] else None
        grad_v = -(gamma * ke_x.sum(0))
        grad_inst_std = -gamma * ke_sum
        c1, c2 = _through_moments(
            torch.zeros_like(inst_std),
            grad_inst_std / (2 * inst_std),
            inst_mean,
            c,
            False,
            math.prod(x.shape[2:]),
        )
        if not ctx.fixed:
            grad_d = -gamma * (k_sum - ke_sum)
            grad_mu = -gamma * g_den_sum if cfg.center else torch.zeros_like(grad_d)
            if cfg.scale == "rms":
                grad_mu = grad_mu + grad_d * mu / d
            batch, count = cfg.partition in BATCH_PARTITIONS, x.numel() // mean_s.numel()
            set_c1, set_c2 = _through_moments(grad_mu, grad_d / (2 * d), mean_s, ctx.groups, batch, count)
            c1, c2 = c1 + set_c1, c2 + set_c2
        grad_x = g_den.mul_(_per_channel(gamma, x)).addcmul_(k, _per_channel(gamma * v, x), value=-1.0)
        grad_x.addcmul_(x, _as_map(c2, x)).add_(_as_map(c1, x))
        return grad_x, grad_weight, grad_bias, grad_v, None, None, None, None


def _inverse_denominator(cfg: NormConfig, mu: Tensor, var: Tensor) -> Tensor | None:
    """1 / d of the module docstring, or None for scale = none."""
    if cfg.scale == "std":
        return torch.rsqrt(var + cfg.eps)
    if cfg.scale == "rms":
        return torch.rsqrt(var + mu.square() + cfg.eps)
    return None


def _moment_grads(cfg: NormConfig, mu, r, a, weight, p_centered, q) -> tuple[Tensor, Tensor]:
    """∂L/∂μ and ∂L/∂σ² per (sample, channel) of :class:`_Folded`, from ∂L/∂a = Σ g·h and ∂L/∂b = q.

    ∂L/∂r = γ · (Σ g·h − μ q) with ∂r/∂σ² = −r³/2 and, for rms, ∂r/∂μ = −r³ μ; centering adds −a q to ∂L/∂μ.
    """
    grad_mu = -a * q if cfg.center else torch.zeros_like(q)
    if r is None:
        return grad_mu, torch.zeros_like(q)
    k = (p_centered if weight is None else p_centered * weight) * r.pow(3)
    return (grad_mu - k * mu if cfg.scale == "rms" else grad_mu), -0.5 * k


def _through_moments(
    grad_mu: Tensor, grad_var: Tensor, mean_s: Tensor, groups: int, batch: bool, count: int
) -> tuple[Tensor, Tensor]:
    """(c₁, c₂), (N or 1, C), with ∂L/∂x = x · c₂ + c₁ through the moments (μ, σ²) of the sets.

    ``grad_mu``, ``grad_var`` (N, C): gradients of each (sample, channel)'s copy of its set's statistics;
    ``mean_s`` (N or 1, G): the sets' means, each over ``count`` elements. Per set, ∂L/∂x = ∂L/∂μ / count
    + 2 (x − μ) ∂L/∂σ² / count.
    """
    c = grad_mu.shape[1]
    c2 = _to_sets(grad_var, groups, batch) * (2 / count)
    c1 = _to_sets(grad_mu, groups, batch) / count - mean_s * c2
    return _to_channels(c1, c), _to_channels(c2, c)


def _foldable(cfg: NormConfig) -> bool:
    """Whether :class:`_Folded` computes this config (the generic kernel's fast path)."""
    return cfg.partition != "position" and (
        cfg.act in ("none", "tlu") or (cfg.act == "evo_s0" and not cfg.center)
    )


def _apply_function(
    m: UnifiedNorm, xf: Tensor, function: type[torch.autograd.Function], params: tuple
) -> Tensor:
    """``function`` (:class:`_Folded` or :class:`_EvoB0`) on float32 x with the module's ``params`` (cast to
    float32) and its running estimates: used in eval mode, updated in train mode."""
    fixed = m.running_mean is not None and not m.training
    y, mean, var = function.apply(
        xf.contiguous(),
        *(None if p is None else p.float() for p in params),
        m.running_mean if fixed else None,
        m.running_var if fixed else None,
        m.config,
        m.groups,
    )
    if m.running_mean is not None and m.training:
        _update_running(m, mean, var, xf.numel() // mean.numel())
    return y


def _generic_kernel(m: UnifiedNorm, x: Tensor) -> Tensor:
    """The formula of the module docstring in float32: :class:`_Folded` where it applies, else statistics
    of the grouped view (evo_b0's elementwise denominator, a centered evo_s0 numerator, ``position``)."""
    cfg = m.config
    xf = x.float()
    if _foldable(cfg):
        return _apply_function(m, xf, _Folded, (m.weight, m.bias, m.tau, m.v)).to(x.dtype)
    if cfg.act == "evo_b0" and cfg.partition != "position":
        return _apply_function(m, xf, _EvoB0, (m.weight, m.bias, m.v)).to(x.dtype)
    xg, dims = _grouped_view(m, xf)
    mean, var = _statistics(m, xg, dims)
    den = _denominator(cfg, mean, var)
    num = xg - mean if cfg.center else xg
    if cfg.act == "evo_b0":
        v = _per_channel(m.v.float(), xf)
        inst_var = _as_map(_group_moments(xf, xf.shape[1], cfg.eps)[1], xf)  # as _EvoB0 takes it
        den = _maximum(den.expand_as(xg).reshape(xf.shape), v * xf + torch.sqrt(inst_var + cfg.eps))
        y = num.reshape(xf.shape) / den
    else:
        y = (num if den is None else num / den).reshape(xf.shape)
    if cfg.act == "evo_s0":
        y = y * torch.sigmoid(_per_channel(m.v.float(), xf) * xf)
    return _recover(m, y).to(x.dtype)


def select_kernel(cfg: NormConfig) -> Kernel:
    """The fastest exact implementation of a config: a fused torch kernel where one exists. Kernels take
    channels-first input, except :data:`_LAST_DIM_KERNELS` (layout ``tokens`` only)."""
    plain = cfg.act == "none"
    if cfg.partition == "none":
        return _identity_kernel
    if cfg.layout == "tokens" and cfg.partition == "position":
        if plain and cfg.center and cfg.scale == "std":
            return _last_dim_layer_norm
        if plain and not cfg.center and cfg.scale == "rms" and cfg.affine != "full":
            return _last_dim_rms_norm
    if plain and cfg.center and cfg.scale == "std":
        if cfg.partition == "batch":
            return _batch_norm_kernel
        if cfg.partition in ("layer", "instance", "group"):
            return _group_norm_kernel
        if cfg.partition == "position":
            return _position_layer_norm_kernel
    if plain and not cfg.center and cfg.scale == "rms" and cfg.affine != "full":
        if cfg.partition == "layer":
            return _layer_rms_norm_kernel
        if cfg.partition == "position":
            return _position_rms_norm_kernel
    return _generic_kernel


_LAST_DIM_KERNELS = (_last_dim_layer_norm, _last_dim_rms_norm)
"""Kernels that take a tokens-layout input (N, *L, C) as it is."""

__all__ = ["BATCH_PARTITIONS", "DYT_ALPHA", "UnifiedNorm", "select_kernel"]
