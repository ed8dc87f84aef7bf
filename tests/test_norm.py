"""The unified layer against torch's own layers: outputs, gradients, running statistics, state dicts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from normsearch import build_norm, parse_spec
from normsearch.norm import layer as layer_module

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ATOL = 1e-5


def _randomize_affine(ours: nn.Module, ref: nn.Module, gen: torch.Generator) -> None:
    """Give both layers the same random γ/β (init values would hide affine bugs)."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            p_ours, p_ref = getattr(ours, name, None), getattr(ref, name, None)
            if p_ours is None or p_ref is None:
                continue
            value = torch.randn(p_ours.shape, generator=gen) * 0.5 + (1.0 if name == "weight" else 0.0)
            p_ours.copy_(value)
            p_ref.copy_(value.reshape(p_ref.shape) if p_ref.shape == value.shape else value)


def _assert_same_forward_backward(ours, ref, x, gen, *, atol=ATOL, grad_atol=1e-4, grad_rtol=1e-4, msg=None):
    """ours(x) equals ref(x), and backpropagating one random output gradient gives equal input gradients
    (parameter gradients accumulate on both sides for the caller to compare)."""
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, atol=atol, rtol=1e-4, msg=msg)
    g = torch.randn(ya.shape, generator=gen).to(x.device)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=grad_atol, rtol=grad_rtol, msg=msg)


def _compare_train_eval(ours, ref, shape, device, steps=3):
    """Several train steps (outputs, input/param grads, running stats), then eval outputs."""
    gen = torch.Generator().manual_seed(0)
    ours, ref = ours.to(device), ref.to(device)
    for _ in range(steps):
        x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(device)
        _assert_same_forward_backward(ours, ref, x, gen)
    for name, p in ours.named_parameters():
        p_ref = dict(ref.named_parameters())[name]
        torch.testing.assert_close(p.grad.reshape(p_ref.shape), p_ref.grad, atol=1e-4, rtol=1e-4, msg=name)
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, dict(ref.named_buffers())[name], atol=ATOL, rtol=1e-4, msg=name)
    ours.eval(), ref.eval()
    x = torch.randn(shape, generator=gen).to(device)
    torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=1e-4)


def _force_generic(module):
    module.kernel = layer_module.generic_kernel_of(module.config)
    return module


TWINS = {
    # spec: (torch twin factory(C), input shape)
    "bn": (lambda c: nn.BatchNorm2d(c), (8, 16, 5, 5)),
    "bn:momentum=0.3,eps=0.001": (lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.3), (8, 16, 5, 5)),
    "bn:running=false": (lambda c: nn.BatchNorm2d(c, track_running_stats=False), (8, 16, 5, 5)),
    "bn:affine=none": (lambda c: nn.BatchNorm2d(c, affine=False), (8, 16, 5, 5)),
    "ln": (lambda c: nn.GroupNorm(1, c), (4, 16, 5, 5)),
    "in": (lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=False), (4, 16, 5, 5)),
    "gn": (lambda c: nn.GroupNorm(32, c), (4, 64, 3, 3)),
    "gn:groups=4": (lambda c: nn.GroupNorm(4, c), (4, 16, 5, 5)),
    "gn:group_size=2": (lambda c: nn.GroupNorm(c // 2, c), (4, 16, 5, 5)),
    "gn:groups=4,affine=none": (lambda c: nn.GroupNorm(4, c, affine=False), (4, 16, 5, 5)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("generic", [False, True], ids=["dispatched", "generic"])
@pytest.mark.parametrize("spec", list(TWINS))
def test_matches_torch_twin(spec, generic, device):
    factory, shape = TWINS[spec]
    ours = build_norm(spec, shape[1])
    if generic:
        _force_generic(ours)
    ref = factory(shape[1])
    _randomize_affine(ours, ref, torch.Generator().manual_seed(1))
    _compare_train_eval(ours, ref, shape, device)


def test_fused_kernels_are_dispatched():
    """Configs with a torch twin must not take the (slower) generic path."""
    assert build_norm("bn", 8).kernel == "batch_norm"
    for spec in ("ln", "in", "gn:groups=4"):
        assert build_norm(spec, 8).kernel == "group_norm", spec
    assert build_norm("rms", 8).kernel == "layer_rms_norm"
    assert build_norm("pn", 8).kernel == "position"  # faster than F.layer_norm through channels-last copies
    assert build_norm("pn:layout=tokens", 8).kernel == "last_dim_layer_norm"
    assert build_norm("frn", 8).kernel == "folded"


class _ChannelsLast(nn.Module):
    """Applies a last-dim layer (nn.LayerNorm / nn.RMSNorm over C) at every position of (N, C, *S)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


@pytest.mark.parametrize("generic", [False, True], ids=["dispatched", "generic"])
def test_position_norm_matches_layernorm_over_channels(generic):
    ours = build_norm("pn", 16)
    if generic:
        _force_generic(ours)
    ref = nn.LayerNorm(16, eps=1e-5)
    _randomize_affine(ours, ref, torch.Generator().manual_seed(2))
    # parameter names differ by the wrapper prefix: compare through a flat wrapper
    gen = torch.Generator().manual_seed(3)
    _assert_same_forward_backward(ours, _ChannelsLast(ref), torch.randn(4, 16, 5, 5, generator=gen), gen)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec", ["rms", "rms:affine=none", "pn:center=false,scale=rms,affine=gain"])
@pytest.mark.parametrize("generic", [False, True], ids=["dispatched", "generic"])
def test_rms_matches_torch_rmsnorm(spec, generic):
    """``rms`` = nn.RMSNorm over (C, H, W) (or over C per position) with the per-channel γ broadcast."""
    cfg = parse_spec(spec)
    c, h, w = 8, 5, 5
    ours = build_norm(cfg, c)
    if generic:
        _force_generic(ours)
    gamma = torch.rand(c, generator=torch.Generator().manual_seed(4)) + 0.5
    over_position = cfg.partition == "position"
    ref = nn.RMSNorm(c if over_position else [c, h, w], eps=1e-5, elementwise_affine=cfg.affine != "none")
    with torch.no_grad():
        if ours.weight is not None:
            ours.weight.copy_(gamma)
            ref.weight.copy_(gamma if over_position else gamma[:, None, None].expand(c, h, w))
    wrapped = _ChannelsLast(ref) if over_position else ref
    gen = torch.Generator().manual_seed(5)
    _assert_same_forward_backward(ours, wrapped, torch.randn(4, c, h, w, generator=gen) + 1.0, gen)
    if ours.weight is not None:
        ref_grad = ref.weight.grad if over_position else ref.weight.grad.sum(dim=(1, 2))
        torch.testing.assert_close(ours.weight.grad, ref_grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec, groups", [("bgn:groups=4", 4), ("bgn:group_size=2", 8)])
def test_batch_group_norm_is_batchnorm_over_channel_groups(spec, groups):
    """batch_group = BatchNorm1d over G "channels" of the (N, G, C/G·H·W) view, then per-channel affine."""
    c = 16
    ours = build_norm(spec, c)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(groups, affine=False)
            self.weight = nn.Parameter(ours.weight.detach().clone())
            self.bias = nn.Parameter(ours.bias.detach().clone())

        def forward(self, x):
            y = self.bn(x.reshape(x.shape[0], groups, -1)).reshape(x.shape)
            return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    ref = Reference()
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        _assert_same_forward_backward(ours, ref, torch.randn(6, c, 4, 4, generator=gen) * 3 + 1, gen)
    torch.testing.assert_close(ours.running_mean, ref.bn.running_mean)
    torch.testing.assert_close(ours.running_var, ref.bn.running_var)
    assert int(ours.num_batches_tracked) == int(ref.bn.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(6, c, 4, 4, generator=gen)
    torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Layers with no torch twin: against independent, literal implementations of their papers' formulas.
def _per_c(p):
    return p.view(1, -1, 1, 1)


def _frn_reference(m, x):
    nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
    y = x * torch.rsqrt(nu2 + m.config.eps) * _per_c(m.weight) + _per_c(m.bias)
    return torch.max(y, _per_c(m.tau))


def _evonorm_s0_reference(m, x):
    n, c, h, w = x.shape
    g = m.groups
    var = x.reshape(n, g, -1).var(dim=-1, unbiased=False, keepdim=True)
    std = torch.sqrt(var + m.config.eps).expand(n, g, c // g * h * w).reshape(x.shape)
    return x * torch.sigmoid(_per_c(m.v) * x) / std * _per_c(m.weight) + _per_c(m.bias)


def _evonorm_b0_reference(m, x, batch_var):
    inst_std = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + m.config.eps)
    den = torch.max(torch.sqrt(batch_var.view(1, -1, 1, 1) + m.config.eps), _per_c(m.v) * x + inst_std)
    return x / den * _per_c(m.weight) + _per_c(m.bias)


@pytest.mark.parametrize("spec", ["frn", "evonorm_s0:groups=4", "evonorm_b0"])
def test_layers_without_twin_match_their_formulas(spec):
    m = build_norm(spec, 16)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p is m.weight or p is m.v else 0.0))
    x = torch.randn(4, 16, 5, 5, generator=gen) * 2 + 0.3
    references = {
        "frn": lambda t: _frn_reference(m, t),
        "evonorm_s0:groups=4": lambda t: _evonorm_s0_reference(m, t),
        "evonorm_b0": lambda t: _evonorm_b0_reference(m, t, t.var(dim=(0, 2, 3), unbiased=False)),
    }
    _assert_same_forward_backward(m, references[spec], x, gen)
    if spec == "evonorm_b0":  # eval: running var (unbiased updates, as torch's BN)
        expected_running = 0.9 + 0.1 * x.var(dim=(0, 2, 3), unbiased=True)
        torch.testing.assert_close(m.running_var, expected_running)
        m.eval()
        torch.testing.assert_close(m(x), _evonorm_b0_reference(m, x, m.running_var), atol=ATOL, rtol=1e-4)


def test_tlu_at_init_is_relu_and_none_is_identity():
    x = torch.randn(2, 8, 3, 3)
    frn = build_norm("frn", 8)
    assert torch.all(frn(x) >= 0)
    torch.testing.assert_close(build_norm("none", 8)(x), x)
    assert not list(build_norm("none", 8).parameters())


# ---------------------------------------------------------------------------------------------------
def test_state_dicts_move_between_torch_and_unified_layers():
    bn = nn.BatchNorm2d(16)
    bn(torch.randn(4, 16, 3, 3))  # non-trivial running stats
    ours = build_norm("bn", 16)
    ours.load_state_dict(bn.state_dict(), strict=True)
    nn.BatchNorm2d(16).load_state_dict(ours.state_dict(), strict=True)
    bn.eval(), ours.eval()
    x = torch.randn(2, 16, 3, 3)
    torch.testing.assert_close(ours(x), bn(x))
    gn = nn.GroupNorm(4, 16)
    build_norm("gn:groups=4", 16).load_state_dict(gn.state_dict(), strict=True)
    gn.load_state_dict(build_norm("gn:groups=4", 16).state_dict(), strict=True)


# ---------------------------------------------------------------------------------------------------
def test_weight_norm_conv_matches_torch_weight_norm_formula():
    from normsearch import build_conv

    conv = build_conv(parse_spec("wn"), 4, 8, 3)
    assert conv.bias is not None
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
    w = conv.effective_weight()
    ref = torch._weight_norm(conv.weight, conv.gain, 0)  # g · v / ‖v‖ (torch's weight norm, no eps)
    torch.testing.assert_close(w, ref, atol=1e-5, rtol=1e-4)
    filter_norms = torch.linalg.vector_norm(w, dim=(1, 2, 3))
    torch.testing.assert_close(filter_norms, conv.gain.flatten(), atol=1e-4, rtol=1e-4)


def test_scaled_ws_conv_standardizes_filters():
    from normsearch import build_conv
    from normsearch.norm.conv import RELU_GAIN

    conv = build_conv(parse_spec("sws"), 4, 8, 3)
    w = conv.effective_weight()
    fan_in = 4 * 9
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-6)
    std = w.std(dim=(1, 2, 3), unbiased=False)
    assert torch.allclose(std, torch.full((8,), RELU_GAIN / math.sqrt(fan_in)), rtol=1e-3)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    conv(x).sum().backward()
    assert conv.gain.grad is not None and conv.weight.grad is not None


# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["frn", "bn", "evonorm_b0", "bgn:groups=4"])
def test_bf16_autocast_keeps_float32_statistics(spec):
    """A common offset: bf16 sums of squares would lose the variance, float32 statistics keep it.

    The reference is the float32 computation on the same (bf16-representable) input. Uncentered layers
    keep an offset in their output by design, so they get a zero-mean input with a large spread instead.
    """
    m = build_norm(spec, 8)
    gen = torch.Generator().manual_seed(8)
    offset, spread = (20.0, 1.0) if m.config.center else (0.0, 20.0)
    x = (offset + spread * torch.randn(4, 8, 6, 6, generator=gen)).to(torch.bfloat16).float()
    expected = m(x)
    m_again = build_norm(spec, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m_again(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert expected.std() > 0.3  # the signal survived the input quantization
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.02)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    for spec in ("evonorm_s0:groups=4", "evonorm_b0", "bn"):
        eager = build_norm(spec, 8)
        compiled_module = build_norm(spec, 8)
        compiled_module.load_state_dict(eager.state_dict())
        compiled = torch.compile(compiled_module, fullgraph=True)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, 8, 5, 5, generator=gen)
        _assert_same_forward_backward(eager, compiled, x, gen, atol=1e-5, grad_atol=1e-5)
        for name, buffer in eager.named_buffers():
            torch.testing.assert_close(buffer, dict(compiled_module.named_buffers())[name])


def test_inputs_with_fewer_spatial_dims_equal_the_same_values_as_a_map():
    """(N, C) and (N, C, L) inputs give what (N, C, 1, 1) and (N, C, L, 1) give: outputs, input and
    parameter gradients, running estimates (the (N, C, H, W) path is checked against the formula above)."""
    from tests.test_config import _random_configs

    extra = [
        parse_spec(s) for s in ("frn", "evonorm_s0:groups=8", "evonorm_b0", "in:act=tlu", "bgn:groups=4")
    ]
    gen = torch.Generator().manual_seed(13)
    for cfg in _random_configs(150, seed=11) + extra:
        for shape, as_map in (((6, 16), (6, 16, 1, 1)), ((6, 16, 5), (6, 16, 5, 1))):
            flat = build_norm(cfg, 16)
            with torch.no_grad():
                for p in flat.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + 1.0)
            mapped = copy.deepcopy(flat)
            x = torch.randn(shape, generator=gen) * 2 + 0.5
            _assert_same_forward_backward(
                flat,
                lambda t, m=mapped, s=as_map: m(t.view(s)).view(t.shape),
                x,
                gen,
                msg=f"{cfg.spec()} {shape}",
            )
            for (name, a), b in zip(flat.named_parameters(), mapped.parameters(), strict=True):
                torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=f"{cfg.spec()} d{name}")
            for (name, a), b in zip(flat.named_buffers(), mapped.buffers(), strict=True):
                torch.testing.assert_close(a, b, msg=f"{cfg.spec()} {name}")


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects input \(N, 8, \*spatial\)"):
        build_norm("bn", 8)(torch.randn(2, 4, 3, 3))


# ---------------------------------------------------------------------------------------------------
def _rows(x, partition, groups):
    """x (N, C, H, W) as a matrix with one row per statistics set; and the inverse map."""
    n, c, h, w = x.shape
    layouts = {
        "batch": (
            lambda t: t.permute(1, 0, 2, 3).reshape(c, -1),
            lambda r: r.reshape(c, n, h, w).permute(1, 0, 2, 3),
        ),
        "layer": (lambda t: t.reshape(n, -1), lambda r: r.reshape(n, c, h, w)),
        "instance": (lambda t: t.reshape(n * c, -1), lambda r: r.reshape(n, c, h, w)),
        "group": (lambda t: t.reshape(n * groups, -1), lambda r: r.reshape(n, c, h, w)),
        "position": (
            lambda t: t.permute(0, 2, 3, 1).reshape(-1, c),
            lambda r: r.reshape(n, h, w, c).permute(0, 3, 1, 2),
        ),
        "batch_group": (
            lambda t: t.reshape(n, groups, -1).permute(1, 0, 2).reshape(groups, -1),
            lambda r: r.reshape(groups, n, -1).permute(1, 0, 2).reshape(n, c, h, w),
        ),
    }
    return layouts[partition]


def _literal_reference(m, x):
    """The module docstring's formula, written independently of the layer (train-mode statistics)."""
    cfg = m.config
    c = x.shape[1]
    pc = lambda p: p.view(1, -1, 1, 1)
    if cfg.partition == "none":
        num, den = x, torch.ones_like(x)
    else:
        to_rows, from_rows = _rows(x, cfg.partition, m.groups)
        r = to_rows(x)
        mu = r.mean(dim=1, keepdim=True)
        var = ((r - mu) ** 2).mean(dim=1, keepdim=True)
        m2 = (r**2).mean(dim=1, keepdim=True)
        num = from_rows(r - mu if cfg.center else r)
        d = {"std": torch.sqrt(var + cfg.eps), "rms": torch.sqrt(m2 + cfg.eps), "none": torch.ones_like(var)}
        den = from_rows(d[cfg.scale].expand_as(r))
    if cfg.act == "evo_b0":
        inst = torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + cfg.eps)
        den = torch.maximum(den, pc(m.v) * x + inst)
    if cfg.act == "evo_s0":
        num = num * torch.sigmoid(pc(m.v) * x)
    y = num / den
    if cfg.act == "dyt":
        y = torch.tanh(m.alpha * y)
    if cfg.act == "derf":
        y = torch.erf(m.alpha * y + m.shift)
    if m.weight is not None:
        y = y * pc(m.weight)
    if m.bias is not None:
        y = y + pc(m.bias)
    if m.tau is not None:
        y = torch.maximum(y, pc(m.tau))
    assert y.shape[1] == c
    return y


def test_random_configs_match_the_literal_formula():
    """Every partition × centering × scale × recovery combination, against an independent implementation."""
    from tests.test_config import _random_configs

    configs = _random_configs(150, seed=11)
    gen = torch.Generator().manual_seed(12)
    for cfg in configs:
        m = build_norm(cfg, 16)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + 1.0)
        x = torch.randn(4, 16, 3, 3, generator=gen) * 2 + 0.5
        _assert_same_forward_backward(
            m,
            lambda t, m=m: _literal_reference(m, t),
            x,
            gen,
            atol=1e-4,
            grad_atol=2e-4,
            grad_rtol=1e-3,
            msg=cfg.spec(),
        )


def test_compiled_core_matches_eager():
    """``compile=True`` runs the functional core through ``torch.compile``: outputs, input and parameter
    gradients and running estimates within float rounding of eager, the exact reference (one config:
    compiling costs seconds on CPU; the export's option is tested in tests/test_export.py)."""
    eager, compiled = build_norm("bgn:groups=4", 16), build_norm("bgn:groups=4", 16, compile=True)
    assert compiled.kernel in layer_module.CORE_FUNCTIONS and not eager.compile
    _randomize_affine(eager, compiled, torch.Generator().manual_seed(5))
    _compare_train_eval(compiled, eager, (4, 16, 5, 5), "cpu", steps=2)
    assert compiled.num_batches_tracked.item() == eager.num_batches_tracked.item() == 2
