"""The unified layer's math as pure functions, like ``torch.nn.functional``.

For an input x of shape (N, C, *S) and a partition Π into sets of elements that share
statistics (G groups of C/G contiguous channels where Π is grouped):

    μ = E_Π[x],  σ² = E_Π[(x - μ)²] (biased),  m₂ = E_Π[x²] = σ² + μ²
    x̃ = x - μ                   if center else x
    d = sqrt(σ² + eps)          if scale = std
        sqrt(m₂ + eps)          if scale = rms
        1                       if scale = none
    d ← max(d, v·x + sqrt(σ²_instance + eps))      if act = evo_b0
    x̃ ← x̃ · sigmoid(v·x)                           if act = evo_s0
    y = γ · x̃ / d + β           (γ, β per channel; either may be absent)
    y ← max(y, τ)               if act = tlu
    (act = dyt: y = γ · tanh(α · x̃ / d) + β, α a scalar)
    (act = derf: y = γ · erf(α · x̃ / d + s) + β, α and s scalars)

Batch partitions with running estimates use them instead of the batch's μ and σ² when not
training, and update them when training (σ² unbiased, as torch's batch norm). Statistics are
computed in float32 whatever the input dtype; the output has the input's dtype.

:func:`select_kernel` is the one dispatch rule: a fused torch kernel for configs that equal a
torch layer, else :func:`folded_norm`, :func:`evo_b0_norm`, :func:`position_norm` or
:func:`stepwise_norm` (all four compute the formula above; the first three with hand-written
backward passes). The exporter
copies the functions a config needs into the exported file, so both run this code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .primitives_aten import group_moments, relu_grad, row_sums, sigmoid_grad_

LAST_DIM_KERNELS = ("last_dim_layer_norm", "last_dim_rms_norm")
"""Kernels that take a layout ``tokens`` input (N, *L, C) as it is; the others channels first."""


def compile_core(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``torch.compile(function)`` as the core is compiled: inductor options that keep a pointwise result
    read by several reductions and the output as an expression recomputed inside each loop instead of a
    full-size buffer written out (its defaults, 4 reads / 5 users, write it). The core's backward passes
    read such results several times: EvoNorm-B0's compiled backward writes 5 full-size tensors with the
    defaults, 2 with these (see benchmarks/norm_speed.py, column "defaults ×")."""
    return torch.compile(
        function,
        options={"realize_reads_threshold": 100, "realize_opusers_threshold": 100},
    )


def generic_kernel(*, partition: str, center: bool, act: str) -> str:
    """The kernel of this module that computes a config: ``folded`` (statistics constant per
    (sample, channel), act none, tlu or uncentered evo_s0), ``evo_b0`` (such statistics, act
    evo_b0), ``position`` (statistics per (sample, position), act none or tlu), else
    ``stepwise``."""
    if partition == "position":
        return "position" if act in ("none", "tlu") else "stepwise"
    if act in ("none", "tlu") or (act == "evo_s0" and not center):
        return "folded"
    if act == "evo_b0":
        return "evo_b0"
    return "stepwise"


def select_kernel(
    *, partition: str, center: bool, scale: str, act: str, affine: str, layout: str
) -> str:
    """The fastest exact kernel for a config (values of :class:`~normsearch.norm.NormConfig`):
    a fused one where a torch layer computes it (``identity``: no statistics, :func:`recover`
    only; ``batch_norm``, ``group_norm``, ``layer_rms_norm``, and :data:`LAST_DIM_KERNELS`),
    else :func:`generic_kernel`. Channels-first ``position`` configs run on
    :func:`position_norm`, not on ``F.layer_norm`` / ``F.rms_norm``, which need the input
    and output copied to channels last: on CPU it is 1.1-2.5× faster than torch's LayerNorm
    that way and 2-4× faster than its RMSNorm (``benchmarks/norm_speed.py``)."""
    plain = act == "none"
    std = plain and center and scale == "std"
    rms = plain and not center and scale == "rms" and affine != "full"
    if partition == "none":
        return "identity"
    if layout == "tokens" and partition == "position" and (std or rms):
        return "last_dim_layer_norm" if std else "last_dim_rms_norm"
    if std and partition == "batch":
        return "batch_norm"
    if std and partition in ("layer", "instance", "group"):
        return "group_norm"
    if rms and partition == "layer":
        return "layer_rms_norm"
    return generic_kernel(partition=partition, center=center, act=act)


# ---------------------------------------------------------------------------------------
# Shared pieces.
def per_channel(p: Tensor, x: Tensor) -> Tensor:
    """p (C,) viewed as (1, C, 1, ..., 1) to broadcast against x (N, C, *S)."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """max(a, b) as b + relu(a - b): same values, and a backward that is one threshold
    instead of ``torch.maximum``'s tie-splitting masks (3-4× faster on CPU). At ties the
    gradient goes to b."""
    return b + torch.relu(a - b)


def recover(
    y: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    alpha: Tensor | None = None,
    shift: Tensor | None = None,
) -> Tensor:
    """Ψ on y (N, C, *S): Derf's γ · erf(α · y + s) + β (α, s scalars, :class:`DynamicErf`) when s
    is given, DyT's γ · tanh(α · y) + β (α a scalar, :class:`DynamicTanh`) when only α is, else
    y · γ + β (per channel) then TLU max(y, τ) (per channel); each step only where its parameter
    is given."""
    if shift is not None:
        return DynamicErf.apply(y, alpha, shift, weight, bias)
    if alpha is not None:
        return DynamicTanh.apply(y, alpha, weight, bias)
    if weight is not None:
        y = y * per_channel(weight, y)
    if bias is not None:
        y = y + per_channel(bias, y)
    if tau is not None:
        y = maximum(y, per_channel(tau, y))
    return y


class DynamicTanh(torch.autograd.Function):
    """DyT: z = γ · tanh(α · y) + β for y (N, C, *S), α a scalar, γ and β of shape C or None,
    with an analytic backward. With t = tanh(α · y) and u = g · γ · (1 − t²):

        ∂L/∂y = α · u,  ∂L/∂α = Σ u · y,  ∂L/∂γ = Σ_{N,S} g · t,  ∂L/∂β = Σ_{N,S} g

    Forward writes t (saved) and z; backward one buffer, g · t, turned into u in place (then
    ∂L/∂y), and the product u · y. Autograd's chain of mul, tanh, mul and add took 1.3-1.9×
    as long on CPU. Dtypes follow the plain formula's (t in y's, z promoted with γ, β).
    Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, y, alpha, weight, bias):
        t = torch.mul(y, alpha).tanh_()
        ctx.save_for_backward(y, t, alpha, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _affine(t, weight, bias, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, t, alpha, weight = ctx.saved_tensors
        dims = (0, *range(2, y.dim()))
        needs_alpha, needs_weight, needs_bias = ctx.needs_input_grad[1:]
        u = torch.mul(grad, t)  # g · t
        grad_weight = u.sum(dims).to(weight.dtype) if needs_weight else None
        grad_bias = grad.sum(dims).to(ctx.bias_dtype) if needs_bias else None
        u.mul_(t).neg_().add_(grad)  # g · (1 − t²)
        if weight is not None:
            u.mul_(per_channel(weight, y))
        grad_alpha = torch.mul(u, y).sum().to(alpha.dtype) if needs_alpha else None
        return u.mul_(alpha).to(y.dtype), grad_alpha, grad_weight, grad_bias


def _affine(
    t: Tensor, weight: Tensor | None, bias: Tensor | None, like: Tensor
) -> Tensor:
    """γ · t + β per channel of ``like`` (N, C, *S), each where given; a new tensor."""
    if weight is not None and bias is not None:
        return torch.addcmul(per_channel(bias, like), t, per_channel(weight, like))
    if weight is not None:
        return t * per_channel(weight, like)
    if bias is not None:
        return t + per_channel(bias, like)
    return t.clone()


class DynamicErf(torch.autograd.Function):
    """Derf: z = γ · erf(α · y + s) + β for y (N, C, *S), α and s scalars, γ and β of shape C or
    None, with an analytic backward. With a = α · y + s, e = erf(a) and
    u = g · γ · 2/√π · exp(−a²):

        ∂L/∂y = α · u,  ∂L/∂α = Σ u · y,  ∂L/∂s = Σ u,  ∂L/∂γ = Σ_{N,S} g · e,  ∂L/∂β = Σ_{N,S} g

    Forward saves y only (e and a are recomputed in backward: one erf and one exp, both
    elementwise), so it keeps one tensor besides the output, as :class:`DynamicTanh` keeps two.
    Dtypes follow the plain formula's. Not twice differentiable.
    """

    SLOPE = 1.1283791670955126
    """d erf(a)/da at a = 0, 2/√π."""

    @staticmethod
    def forward(ctx, y, alpha, shift, weight, bias):
        e = torch.mul(y, alpha).add_(shift).erf_()
        ctx.save_for_backward(y, alpha, shift, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _affine(e, weight, bias, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, alpha, shift, weight = ctx.saved_tensors
        dims = (0, *range(2, y.dim()))
        needs_alpha, needs_shift, needs_weight, needs_bias = ctx.needs_input_grad[1:]
        a = torch.mul(y, alpha).add_(shift)
        grad_weight = (
            torch.mul(grad, a.erf()).sum(dims).to(weight.dtype)
            if needs_weight
            else None
        )
        grad_bias = grad.sum(dims).to(ctx.bias_dtype) if needs_bias else None
        u = a.square_().neg_().exp_().mul_(DynamicErf.SLOPE).mul_(grad)  # g · erf'(a)
        if weight is not None:
            u.mul_(per_channel(weight, y))
        grad_alpha = torch.mul(u, y).sum().to(alpha.dtype) if needs_alpha else None
        grad_shift = u.sum().to(shift.dtype) if needs_shift else None
        return u.mul_(alpha).to(y.dtype), grad_alpha, grad_shift, grad_weight, grad_bias


@torch.no_grad()
def update_running(
    running_mean: Tensor,
    running_var: Tensor,
    mean: Tensor,
    var: Tensor,
    count: int,
    momentum: float,
) -> None:
    """running ← (1 − momentum) · running + momentum · batch value, in place: μ as it is,
    σ² (biased over ``count`` elements) made unbiased, as torch's batch norm does."""
    running_mean.lerp_(mean.reshape(-1).to(running_mean.dtype), momentum)
    unbiased = var.reshape(-1) * (count / max(count - 1, 1))
    running_var.lerp_(unbiased.to(running_var.dtype), momentum)


def pooled(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Moments (1, G) of each set pooled over the samples from equal-sized per-sample
    moments (N, G): μ = mean of the μₙ, σ² = mean of the σ²ₙ + mean of (μₙ − μ)²."""
    mu = mean.mean(0, keepdim=True)
    return mu, var.mean(0, keepdim=True) + (mean - mu).square().mean(0, keepdim=True)


# ---------------------------------------------------------------------------------------
# Step by step: any partition and act, plain autograd except for the moments.
def grouped_view(
    x: Tensor, partition: str, groups: int
) -> tuple[Tensor, tuple[int, ...]]:
    """x (N, C, *S) viewed as (N, G, C/G, *S) and the dims Π reduces over in that view."""
    n, c, *spatial = x.shape
    spatial_dims = tuple(range(3, 3 + len(spatial)))
    reduce_dims = {
        "batch": (0, 2, *spatial_dims),
        "batch_group": (0, 2, *spatial_dims),
        "layer": (1, 2, *spatial_dims),
        "instance": (2, *spatial_dims),
        "group": (2, *spatial_dims),
        "position": (1, 2),
    }[partition]
    return x.reshape(n, groups, c // groups, *spatial), reduce_dims


class Moments(torch.autograd.Function):
    """(μ, σ²) = mean and biased variance of x over ``dims`` (keepdim), with a one-pass
    backward.

    Forward in two passes, μ = mean(x) then σ² = mean((x − μ)²): as stable as
    ``torch.var_mean``'s Welford pass and 8× faster on CPU for a (64, 64, 32, 32) input
    reduced over C (2.4 vs 19 ms). ∂L/∂x = g_μ / n + 2 (x − μ) g_σ² / n, computed as
    x · c₂ + c₁ (the form of torch's own group-norm backward) instead of autograd's generic
    variance backward, which costs several full passes.
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
    def backward(ctx, grad_mean: Tensor | None, grad_var: Tensor | None):
        x, mean = ctx.saved_tensors
        grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
        if grad_var is None:
            return (grad_mean / ctx.count).expand_as(x), None
        c2 = grad_var * (2 / ctx.count)
        c1 = grad_mean / ctx.count - mean * c2
        return torch.addcmul(c1, x, c2), None


def statistics(
    xg: Tensor,
    dims: tuple[int, ...],
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
) -> tuple[Tensor, Tensor]:
    """(μ, σ²) over ``dims`` of xg, keepdim: the running estimates if given and not
    training, else the batch's (updating the running estimates if given)."""
    stat_shape = [1 if d in dims else s for d, s in enumerate(xg.shape)]
    if running_mean is not None and not training:
        return running_mean.view(stat_shape), running_var.view(stat_shape)
    mean, var = Moments.apply(xg, dims)
    if running_mean is not None:
        count = xg.numel() // mean.numel()
        update_running(running_mean, running_var, mean, var, count, momentum)
    return mean, var


def denominator(mean: Tensor, var: Tensor, scale: str, eps: float) -> Tensor | None:
    """d of the module docstring (None for scale = none)."""
    if scale == "std":
        return torch.sqrt(var + eps)
    if scale == "rms":
        return torch.sqrt(var + mean.square() + eps)
    return None


def stepwise_norm(
    x: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    v: Tensor | None = None,
    alpha: Tensor | None = None,
    shift: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.0,
    partition: str,
    groups: int,
    center: bool,
    scale: str,
    act: str,
    eps: float,
) -> Tensor:
    """The formula of the module docstring for x (N, C, *S), step by step in float32 on the
    grouped view (N, G, C/G, *S): any partition (G = 1 where Π is not grouped), any act.
    γ, β, τ, v (C,) and α, s (scalars) as given; running estimates (C or G,) as
    :func:`statistics` takes them."""
    xf = x.float()
    xg, dims = grouped_view(xf, partition, groups)
    mean, var = statistics(xg, dims, running_mean, running_var, training, momentum)
    den = denominator(mean, var, scale, eps)
    num = xg - mean if center else xg
    if act == "evo_b0":
        vx = per_channel(v.float(), xf) * xf
        xi, inst_dims = grouped_view(xf, "instance", xf.shape[1])
        inst_var = Moments.apply(xi, inst_dims)[1].view(
            *xf.shape[:2], *([1] * (xf.dim() - 2))
        )
        den = maximum(
            den.expand_as(xg).reshape(xf.shape), vx + torch.sqrt(inst_var + eps)
        )
        y = num.reshape(xf.shape) / den
    else:
        y = (num if den is None else num / den).reshape(xf.shape)
    if act == "evo_s0":
        y = y * torch.sigmoid(per_channel(v.float(), xf) * xf)
    return recover(y, weight=weight, bias=bias, tau=tau, alpha=alpha, shift=shift).to(
        x.dtype
    )


# ---------------------------------------------------------------------------------------
# Position: statistics per (sample, position) over C, hand-written backward pass.
class Positional(torch.autograd.Function):
    """The formula of the module docstring for the ``position`` partition (μ, σ² over C at each
    (sample, position), shape (N, 1, *S)) and act none or tlu, with an analytic backward.

    Forward: h = x̃ · r with r = 1 / d (r = 1 for scale none), z = γ · h + β, then max(z, τ).

    Backward, with g the gradient reaching z (zero where TLU took τ; τ gets the rest) and
    gₕ = γ · g, per (sample, position) over C:

        ∂L/∂x = r · (gₕ − [center] · mean(gₕ) − w · mean(gₕ · h))

    with w = (x − μ) · r for scale std, w = x · r for rms (the derivative of r through σ² or
    through m₂), and no w term for scale none. Written with a few full-size passes instead of
    autograd's generic division, broadcasting and variance backward.

    Inputs: x (N, C, *S) float32; γ, β, τ of shape C or None; center, scale, eps. Output
    z (N, C, *S). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, tau, center, scale, eps):
        # Two fresh full-size tensors (h, saved, and z); on CPU each fresh one costs about as
        # much as several passes, so squares go through z's memory and the rest is in place.
        mean = x.mean(1, keepdim=True)
        z = torch.empty_like(x)
        h = torch.sub(x, mean) if center or scale == "std" else None
        r = None
        if scale != "none":
            torch.mul(x, x, out=z) if scale == "rms" else torch.mul(h, h, out=z)
            r = z.mean(1, keepdim=True).add_(eps).rsqrt_()
            if center:
                h.mul_(r)
            else:
                h = torch.mul(x, r, out=h) if h is not None else torch.mul(x, r)
        elif h is None:
            h = x
        if weight is not None and bias is not None:
            torch.addcmul(per_channel(bias, x), h, per_channel(weight, x), out=z)
        elif weight is not None:
            torch.mul(h, per_channel(weight, x), out=z)
        elif bias is not None:
            torch.add(h, per_channel(bias, x), out=z)
        else:
            z.copy_(h)
        if tau is not None:
            z.clamp_(min=per_channel(tau, x))
        ctx.save_for_backward(x, mean, r, h, weight, bias, tau)
        ctx.center, ctx.scale = center, scale
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        # Two fresh full-size tensors: g (the gradient through TLU, then of x) and gh.
        x, mean, r, h, weight, bias, tau = ctx.saved_tensors
        dims = (0, *range(2, x.dim()))
        grad_weight = grad_bias = grad_tau = None
        if tau is not None:
            # z took γ · h + β where that exceeds τ (ties: the gradient goes to τ)
            shift = per_channel(-tau if bias is None else bias - tau, x)
            if weight is None:
                g = h + shift
            else:
                g = torch.addcmul(shift, h, per_channel(weight, x))
            relu_grad(grad, g, out=g)
        else:
            g = grad.clone(memory_format=torch.contiguous_format)
        if bias is not None or tau is not None:
            g_sum = g.sum(dims)
            grad_bias = g_sum if bias is not None else None
            grad_tau = grad.sum(dims) - g_sum if tau is not None else None
        gh = torch.mul(g, h)
        if weight is not None:
            grad_weight = gh.sum(dims)
            gamma = per_channel(weight, x)
            gh.mul_(gamma)
            g.mul_(gamma)
        if ctx.center:
            g.sub_(g.mean(1, keepdim=True))
        if r is not None:
            gh_mean = gh.mean(1, keepdim=True)
            std = ctx.scale == "std"
            if ctx.center == std:  # h is w: (x − μ) · r with std, x · r uncentered rms
                w = h
            elif std:
                w = torch.sub(x, mean, out=gh).mul_(r)
            else:
                w = torch.mul(x, r, out=gh)
            g.addcmul_(w, gh_mean, value=-1.0).mul_(r)
        return g, grad_weight, grad_bias, grad_tau, None, None, None


def position_norm(
    x: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    center: bool,
    scale: str,
    act: str,
    eps: float,
) -> Tensor:
    """:class:`Positional` on x (N, C, *S) in float32, parameters cast to float32: the
    ``position`` partition with act none or tlu (τ given for tlu)."""
    if act not in ("none", "tlu"):
        raise ValueError(f"position_norm computes act none or tlu, got {act!r}")
    y = Positional.apply(
        x.float(),
        *(None if p is None else p.float() for p in (weight, bias, tau)),
        center,
        scale,
        eps,
    )
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------
# Folded: statistics constant per (sample, channel), hand-written backward passes.
def spatial_sum(t: Tensor) -> Tensor:
    """Σ over *S of t (N, C, *S): (N, C), a new tensor (also for no *S, where
    ``sum(dim=())`` would reduce over everything)."""
    return t.reshape(*t.shape[:2], -1).sum(2)


def to_channels(stat: Tensor, c: int) -> Tensor:
    """A per-set value (N or 1, G) repeated over each group's channels: (N or 1, C)."""
    return stat.repeat_interleave(c // stat.shape[1], dim=1)


def to_sets(value: Tensor, groups: int, batch: bool) -> Tensor:
    """Σ of a per-(sample, channel) value (N, C) over each statistics set: (1, G) if
    ``batch`` else (N, G)."""
    sums = value.reshape(value.shape[0], groups, -1).sum(2)
    return sums.sum(0, keepdim=True) if batch else sums


def as_map(t: Tensor, x: Tensor) -> Tensor:
    """(N or 1, C) viewed as (N or 1, C, 1, ...) to broadcast against x (N, C, *S)."""
    return t.view(*t.shape, *([1] * (x.dim() - 2)))


def set_moments(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    groups: int,
    batch: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(μ, σ²) of each statistics set, (N or 1, G), and a scratch tensor like x (or None):
    the running estimates if given, else the batch's (pooled over N if ``batch``)."""
    if running_mean is not None:
        return running_mean.view(1, -1).float(), running_var.view(1, -1).float(), None
    mean_s, var_s, scratch = group_moments(x, groups, eps)
    if batch:
        mean_s, var_s = pooled(mean_s, var_s)
    return mean_s, var_s, scratch


def inverse_denominator(
    mu: Tensor, var: Tensor, scale: str, eps: float
) -> Tensor | None:
    """1 / d of the module docstring, or None for scale = none."""
    if scale == "std":
        return torch.rsqrt(var + eps)
    if scale == "rms":
        return torch.rsqrt(var + mu.square() + eps)
    return None


def moment_grads(
    mu: Tensor,
    r: Tensor | None,
    a: Tensor,
    weight: Tensor | None,
    p_centered: Tensor,
    q: Tensor,
    center: bool,
    scale: str,
) -> tuple[Tensor, Tensor]:
    """∂L/∂μ and ∂L/∂σ² per (sample, channel) of :class:`Folded`, from ∂L/∂a = Σ g·h and
    ∂L/∂b = q.

    ∂L/∂r = γ · (Σ g·h − μ q) with ∂r/∂σ² = −r³/2 and, for rms, ∂r/∂μ = −r³ μ; centering
    adds −a q to ∂L/∂μ.
    """
    grad_mu = -a * q if center else torch.zeros_like(q)
    if r is None:
        return grad_mu, torch.zeros_like(q)
    k = (p_centered if weight is None else p_centered * weight) * r.pow(3)
    return (grad_mu - k * mu if scale == "rms" else grad_mu), -0.5 * k


def through_moments(
    grad_mu: Tensor,
    grad_var: Tensor,
    mean_s: Tensor,
    groups: int,
    batch: bool,
    count: int,
) -> tuple[Tensor, Tensor]:
    """(c₁, c₂), (N or 1, C), with ∂L/∂x = x · c₂ + c₁ through the moments (μ, σ²) of the
    sets.

    ``grad_mu``, ``grad_var`` (N, C): gradients of each (sample, channel)'s copy of its
    set's statistics; ``mean_s`` (N or 1, G): the sets' means, each over ``count``
    elements. Per set, ∂L/∂x = ∂L/∂μ / count + 2 (x − μ) ∂L/∂σ² / count.
    """
    c = grad_mu.shape[1]
    c2 = to_sets(grad_var, groups, batch) * (2 / count)
    c1 = to_sets(grad_mu, groups, batch) / count - mean_s * c2
    return to_channels(c1, c), to_channels(c2, c)


class Folded(torch.autograd.Function):
    """The formula of the module docstring for statistics constant per (sample, channel),
    i.e. every partition but ``position``, and act none, tlu or (uncentered) evo_s0, with an
    analytic backward.

    With μ, σ² and d expanded to (N or 1, C), normalization and affine fold into a = γ / d
    and b = β − μ · a (the μ term only if center; γ = 1, β = 0 where absent), and

        z = x · a + b                     (act none)
        z = max(x · a + b, τ)             (act tlu; at ties the gradient goes to τ)
        z = x · s · a + b                 (act evo_s0, s = sigmoid(v · x))

    Backward: with h the term a multiplies (x, or x · s), the per-(sample, channel) sums
    Σ g · h and Σ g are ∂L/∂a and ∂L/∂b, which give the gradients of γ, β, μ and σ² by
    small-tensor algebra; then ∂L/∂x = g · a (times the gate's derivative) + x · c₂ + c₁
    with c₁, c₂ per (sample, channel): the form of torch's group-norm backward. Full-size
    temporaries are few and reused in place (on CPU each fresh one costs about as much as
    several passes).

    Inputs: x (N, C, *S) float32 contiguous; γ, β, τ, v of shape C or None; running μ, σ²
    (shape G) to use instead of batch statistics, or None; then G, ``batch`` (statistics
    pooled over N), center, scale, act, eps. Outputs: z (N, C, *S) and the batch (μ, σ²) of
    each set, (N or 1, G) (not differentiable; for the running estimates). Not twice
    differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        tau,
        v,
        running_mean,
        running_var,
        groups,
        batch,
        center,
        scale,
        act,
        eps,
    ):
        c = x.shape[1]
        mean_s, var_s, z = set_moments(x, running_mean, running_var, groups, batch, eps)
        mu, var = to_channels(mean_s, c), to_channels(var_s, c)
        r = inverse_denominator(mu, var, scale, eps)
        a = torch.ones_like(mu) if r is None else r
        if weight is not None:
            a = a * weight
        b = -mu * a if center else torch.zeros_like(mu)
        if bias is not None:
            b = b + bias
        am, bm = as_map(a, x), as_map(b, x)
        z = torch.empty_like(x) if z is None else z
        gate = None
        if act == "evo_s0":
            gate = torch.mul(x, per_channel(v, x)).sigmoid_()
            torch.mul(x, gate, out=z).mul_(am).add_(bm)
        else:
            torch.addcmul(bm, x, am, out=z)
        if act == "tlu":
            z.clamp_(min=per_channel(tau, x))
        ctx.save_for_backward(x, mean_s, mu, r, a, b, weight, tau, v, gate)
        ctx.options = groups, batch, center, scale, act
        ctx.fixed = running_mean is not None
        ctx.mark_non_differentiable(mean_s, var_s)
        return z, mean_s, var_s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, mean_s, mu, r, a, b, weight, tau, v, gate = ctx.saved_tensors
        groups, batch, center, scale, act = ctx.options
        g = grad.contiguous()
        am = as_map(a, x)
        grad_tau = grad_v = None
        if act == "tlu":
            # u = x · a + b − τ > 0 where z took x · a + b; τ gets the rest of g
            g_in = torch.addcmul(as_map(b, x) - per_channel(tau, x), x, am)
            relu_grad(g, g_in, out=g_in)
            p, q = row_sums(g_in, x)
            grad_tau = (spatial_sum(g) - q).sum(0)
            grad_x = g_in.mul_(am)
        elif act == "evo_s0":
            # h = x · s; ∂h/∂x = s + v · x · s (1 − s), ∂h/∂v = x² · s (1 − s)
            g_x = torch.mul(g, x)
            p, q = row_sums(g_x, gate)[0], spatial_sum(g)
            w = sigmoid_grad_(g_x, gate)  # g · x · s (1 − s)
            grad_v = (a * row_sums(w, x)[0]).sum(0)
            grad_x = w.mul_(per_channel(v, x)).addcmul_(g, gate).mul_(am)
        else:
            p, q = row_sums(g, x)
            grad_x = g * am if ctx.fixed else None
        p_centered = p - mu * q if center else p  # Σ g · (h − μ), h − μ = (z − β) / a
        grad_weight = None
        if weight is not None:
            grad_weight = (p_centered if r is None else p_centered * r).sum(0)
        grad_bias = q.sum(0) if ctx.needs_input_grad[2] else None
        if not ctx.fixed:
            grad_mu, grad_var = moment_grads(
                mu, r, a, weight, p_centered, q, center, scale
            )
            count = x.numel() // mean_s.numel()
            c1, c2 = through_moments(grad_mu, grad_var, mean_s, groups, batch, count)
            c1, c2 = as_map(c1, x), as_map(c2, x)
            if grad_x is None:
                grad_x = torch.addcmul(c1, g, am).addcmul_(x, c2)
            else:
                grad_x.addcmul_(x, c2).add_(c1)
        nones = (None,) * 8
        return grad_x, grad_weight, grad_bias, grad_tau, grad_v, *nones


class EvoB0(torch.autograd.Function):
    """act = evo_b0 for statistics constant per (sample, channel), with an analytic
    backward. With d of the module docstring (N or 1, C) and σᵢ = sqrt(instance σ² + eps)
    (N, C):

        D = max(d, v · x + σᵢ) = d + relu(u),  u = v · x + σᵢ − d  (ties: gradient to d)
        z = γ · (x − μ) / D + β                                     (μ term only if center)

    Backward: with k = g · (x − μ) / D² and kₑ = k where u > 0, the per-(sample, channel)
    sums of g · (x − μ) / D, g / D, g, k, kₑ and kₑ · x give the gradients of γ, β, v, d,
    σᵢ and μ, and ∂L/∂x = γ · (g / D − v · kₑ) + x · c₂ + c₁ through the set and instance
    moments.

    Inputs and outputs as :class:`Folded`, without τ and act. Not twice differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        v,
        running_mean,
        running_var,
        groups,
        batch,
        center,
        scale,
        eps,
    ):
        c = x.shape[1]
        inst_mean, inst_var, u = group_moments(x, c, eps)
        if running_mean is None and groups == c:
            mean_s, var_s = (inst_mean, inst_var)
            if batch:
                mean_s, var_s = pooled(mean_s, var_s)
        else:
            mean_s, var_s, _ = set_moments(
                x, running_mean, running_var, groups, batch, eps
            )
        mu = to_channels(mean_s, c)
        d = denominator(mu, to_channels(var_s, c), scale, eps)
        inst_std = torch.sqrt(inst_var + eps)
        torch.mul(x, per_channel(v, x), out=u).add_(as_map(inst_std - d, x))
        z = torch.relu(u).add_(as_map(d, x))
        torch.div(x - as_map(mu, x) if center else x, z, out=z)
        if weight is not None:
            z.mul_(per_channel(weight, x))
        if bias is not None:
            z.add_(per_channel(bias, x))
        ctx.save_for_backward(x, u, mean_s, mu, d, inst_mean, inst_std, weight, v)
        ctx.options = groups, batch, center, scale
        ctx.fixed = running_mean is not None
        ctx.mark_non_differentiable(mean_s, var_s)
        return z, mean_s, var_s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, u, mean_s, mu, d, inst_mean, inst_std, weight, v = ctx.saved_tensors
        groups, batch, center, scale = ctx.options
        c = x.shape[1]
        g = grad.contiguous()
        num = x - as_map(mu, x) if center else x
        den = torch.relu(u).add_(as_map(d, x))
        g_den = torch.div(g, den)
        gy, g_den_sum = row_sums(g_den, num)
        k = torch.div(g_den, den, out=den).mul_(num)
        k_sum = spatial_sum(k)
        relu_grad(k, u, out=k)  # kₑ
        ke_x, ke_sum = row_sums(k, x)
        gamma = x.new_ones(c) if weight is None else weight
        grad_weight = gy.sum(0) if weight is not None else None
        grad_bias = spatial_sum(g).sum(0) if ctx.needs_input_grad[2] else None
        grad_v = -(gamma * ke_x.sum(0))
        grad_inst_std = -gamma * ke_sum
        inst_count = x[0, 0].numel()
        c1, c2 = through_moments(
            torch.zeros_like(inst_std),
            grad_inst_std / (2 * inst_std),
            inst_mean,
            c,
            False,
            inst_count,
        )
        if not ctx.fixed:
            grad_d = -gamma * (k_sum - ke_sum)
            grad_mu = -gamma * g_den_sum if center else torch.zeros_like(grad_d)
            if scale == "rms":
                grad_mu = grad_mu + grad_d * mu / d
            count = x.numel() // mean_s.numel()
            set_c1, set_c2 = through_moments(
                grad_mu, grad_d / (2 * d), mean_s, groups, batch, count
            )
            c1, c2 = c1 + set_c1, c2 + set_c2
        grad_x = g_den.mul_(per_channel(gamma, x))
        grad_x.addcmul_(k, per_channel(gamma * v, x), value=-1.0)
        grad_x.addcmul_(x, as_map(c2, x)).add_(as_map(c1, x))
        return grad_x, grad_weight, grad_bias, grad_v, *(None,) * 7


def with_statistics(
    function: type[torch.autograd.Function],
    x: Tensor,
    params: tuple[Tensor | None, ...],
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    *options,
) -> Tensor:
    """``function`` (:class:`Folded` or :class:`EvoB0`) on x in float32 with ``params`` cast to float32:
    the running estimates are handed to it when given and not training, and updated in place from the
    batch (μ, σ²) it returns when training. The output has x's dtype."""
    fixed = running_mean is not None and not training
    xf = x.float()
    y, mean, var = function.apply(
        xf.contiguous(),
        *(None if p is None else p.float() for p in params),
        running_mean if fixed else None,
        running_var if fixed else None,
        *options,
    )
    if running_mean is not None and training:
        update_running(
            running_mean, running_var, mean, var, xf.numel() // mean.numel(), momentum
        )
    return y.to(x.dtype)


def folded_norm(
    x: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    v: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.0,
    groups: int,
    batch: bool,
    center: bool,
    scale: str,
    act: str,
    eps: float,
) -> Tensor:
    """:class:`Folded` (act none, tlu or uncentered evo_s0) on x (N, C, *S) in float32,
    parameters cast to float32. ``groups``: G sets per sample (C for batch and instance,
    1 for layer), pooled over N if ``batch``. Running estimates (G,) if given: used when not
    training, updated in place when training."""
    params = (weight, bias, tau, v)
    options = (groups, batch, center, scale, act, eps)
    return with_statistics(
        Folded, x, params, running_mean, running_var, training, momentum, *options
    )


def evo_b0_norm(
    x: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    v: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.0,
    groups: int,
    batch: bool,
    center: bool,
    scale: str,
    eps: float,
) -> Tensor:
    """:class:`EvoB0` on x (N, C, *S) in float32; arguments as :func:`folded_norm`."""
    params = (weight, bias, v)
    options = (groups, batch, center, scale, eps)
    return with_statistics(
        EvoB0, x, params, running_mean, running_var, training, momentum, *options
    )
