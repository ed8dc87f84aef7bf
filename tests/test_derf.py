"""Derf (γ·erf(α·x + s) + β) and α's initial value as an option of DyT and Derf."""

from __future__ import annotations

import zlib

import pytest
import torch

from normsearch.export import export_source
from normsearch.norm import build_norm, functional, parse_spec


@pytest.mark.parametrize("affine", ["full", "gain", "none"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (3, 4), "tokens"])
def test_dynamic_erf_backward_matches_finite_differences_and_the_formula(affine, shape):
    """``DynamicErf``'s hand-written backward against finite differences (y, α, s, γ, β), and its output
    against γ · erf(α · y + s) + β, channels first and on a tokens layout's channels-first view."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{affine}{shape}".encode()))
    if shape == "tokens":
        y = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64).movedim(-1, 1)
    else:
        y = torch.randn(*shape, generator=gen, dtype=torch.float64)
    c = y.shape[1]
    alpha, shift = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64)
    weight = torch.randn(c, generator=gen, dtype=torch.float64) if affine != "none" else None
    bias = torch.randn(c, generator=gen, dtype=torch.float64) if affine == "full" else None
    inputs = [t.requires_grad_() if t is not None else None for t in (y, alpha, shift, weight, bias)]
    assert torch.autograd.gradcheck(functional.DynamicErf.apply, tuple(inputs), atol=1e-6, rtol=1e-5)
    expected = torch.erf(alpha * y + shift) * (1 if weight is None else functional.per_channel(weight, y))
    expected = expected + (0 if bias is None else functional.per_channel(bias, y))
    torch.testing.assert_close(functional.DynamicErf.apply(*inputs), expected, rtol=0, atol=1e-15)


def test_derf_layer_has_alpha_and_shift_and_computes_the_formula_in_tokens_layout():
    layer = build_norm("derf:layout=tokens,alpha_init=0.8", 6)
    assert layer.alpha.item() == pytest.approx(0.8) and layer.shift.item() == 0.0
    with torch.no_grad():
        layer.shift.fill_(0.2)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    expected = layer.weight * torch.erf(0.8 * x + 0.2) + layer.bias
    torch.testing.assert_close(layer(x), expected)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"weight", "bias", "alpha", "shift"}


def test_alpha_init_sets_dyt_alpha_round_trips_and_is_refused_elsewhere():
    assert build_norm("dyt", 4).alpha.item() == 0.5  # the default, unchanged
    cfg = parse_spec("dyt:alpha_init=2.0")
    assert build_norm(cfg, 4).alpha.item() == 2.0
    assert cfg.spec() == "dyt:alpha_init=2.0" and parse_spec(cfg.spec()) == cfg
    assert parse_spec("dyt:alpha_init=0.5").spec() == "dyt"
    assert parse_spec("pn:act=derf").alpha_init == 0.5
    assert parse_spec("dyt:alpha_init=3.0").replace(act="derf").alpha_init == 3.0
    assert parse_spec("dyt:alpha_init=3.0").replace(act="none").alpha_init is None
    with pytest.raises(ValueError, match="option 'alpha_init' applies only to act in"):
        parse_spec("pn:alpha_init=1.0")
    with pytest.raises(ValueError, match="option 'alpha_init' must be a number in"):
        parse_spec("dyt:alpha_init=-1")


@pytest.mark.parametrize("spec", ["derf", "derf:alpha_init=1.5,affine=gain", "pn:act=derf,layout=tokens"])
def test_exported_derf_matches_the_layer(spec):
    cfg = parse_spec(spec)
    namespace: dict = {}
    exec(compile(export_source(cfg, class_name="Exported"), spec, "exec"), namespace)  # noqa: S102
    ours, ref = namespace["Exported"](8), build_norm(cfg, 8)
    assert ours.alpha.item() == ref.alpha.item() == cfg.alpha_init
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    ours.load_state_dict(ref.state_dict(), strict=True)
    shape = (3, 5, 8) if cfg.layout == "tokens" else (3, 8, 4)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward(), yb.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
