"""The norm_layer factory contract, the tokens layout and DyT: against torch's layers, timm's and
torchvision's models, and exported layers inside them."""

from __future__ import annotations

import pytest
import timm  # in the [test] extra: these tests run in CI
import torch
import torch.nn.functional as F
from torch import nn

from normsearch import build_norm, norm_layer
from normsearch.export import export_source
from normsearch.norm import UnifiedNorm, parse_spec
from tests.test_export import assert_same_layer, exported_layer, load

ATOL = 1e-5


def _forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    return y.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}


def _assert_same(ours: nn.Module, ref: nn.Module, shape: tuple[int, ...], seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 1.0)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(shape, generator=gen) * 2 + 0.5
    grad = torch.randn(shape, generator=gen)
    ya, gxa, gpa = _forward_backward(ours, x, grad)
    yb, gxb, gpb = _forward_backward(ref, x, grad)
    torch.testing.assert_close(ya, yb, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(gxa, gxb, atol=ATOL, rtol=1e-5)
    assert gpa.keys() == gpb.keys()
    for name in gpa:
        torch.testing.assert_close(gpa[name], gpb[name], atol=1e-4, rtol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------------
# The factory contract


def test_factory_honours_device_dtype_eps_affine_momentum() -> None:
    make = norm_layer("bn")
    layer = make(8, device="cpu", dtype=torch.float64, eps=1e-3, momentum=0.3)
    assert isinstance(layer, UnifiedNorm)
    assert layer.weight.dtype == torch.float64 and layer.running_var.dtype == torch.float64
    assert layer.num_batches_tracked.dtype == torch.long
    assert (layer.config.eps, layer.config.momentum) == (1e-3, 0.3)
    assert make(8, affine=False).weight is None
    assert norm_layer("gn:groups=4")(8, momentum=0.3).config == parse_spec("gn:groups=4")  # no running stats
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), nn.BatchNorm2d(8, eps=1e-3, dtype=torch.float64)(x))


def test_factory_refuses_unknown_keywords() -> None:
    with pytest.raises(
        TypeError, match=r"norm layer 'gn:groups=4' got unexpected keyword\(s\) act_layer; accepted"
    ):
        norm_layer("gn:groups=4")(8, act_layer=nn.ReLU)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["bn", "gn:groups=8"])
def test_timm_resnet18_trains_with_the_factory_and_an_exported_layer(spec: str) -> None:
    """timm passes device/dtype to every norm layer; both our factory and the exported class take them,
    train, and their state dicts load into each other's model."""
    exported = load(export_source(spec, class_name="Exported"), spec)["Exported"]
    torch.manual_seed(0)
    ours = timm.create_model("resnet18", pretrained=False, num_classes=4, norm_layer=norm_layer(spec))
    theirs = timm.create_model("resnet18", pretrained=False, num_classes=4, norm_layer=exported)
    assert (
        sum(isinstance(m, exported) for m in theirs.modules())
        == sum(isinstance(m, UnifiedNorm) for m in ours.modules())
        == 20
    )
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 16, 16, generator=gen), torch.arange(4)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.01)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(theirs(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------------
# Tokens layout


def test_tokens_position_is_layer_norm_over_the_last_dim() -> None:
    _assert_same(build_norm("pn:layout=tokens", 12), nn.LayerNorm(12, eps=1e-5), (3, 5, 12))
    _assert_same(build_norm("pn:layout=tokens,eps=1e-6", 12), nn.LayerNorm(12, eps=1e-6), (2, 3, 4, 12))


def test_tokens_position_rms_is_rms_norm_over_the_last_dim() -> None:
    spec = "pn:layout=tokens,center=false,scale=rms,affine=gain"
    _assert_same(build_norm(spec, 12), nn.RMSNorm(12, eps=1e-5), (3, 5, 12))


def test_tokens_generic_path_matches_layer_norm() -> None:
    """A tokens config off the fused kernels (DyT after per-token statistics, computed step by step on the
    channels-first view): nn.LayerNorm followed by the DyT formula, outputs and gradients."""
    layer = build_norm("pn:layout=tokens,act=dyt", 12)

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(12, elementwise_affine=False)
            self.weight, self.bias = nn.Parameter(torch.ones(12)), nn.Parameter(torch.zeros(12))
            self.alpha = nn.Parameter(torch.full((), 0.5))

        def forward(self, x):
            return self.weight * torch.tanh(self.alpha * self.ln(x)) + self.bias

    _assert_same(layer, Reference(), (3, 5, 12))


def test_tokens_batch_is_batch_norm_over_the_tokens() -> None:
    class Reference(nn.BatchNorm1d):
        def forward(self, x):
            return super().forward(x.transpose(1, 2)).transpose(1, 2)

    ours, ref = build_norm("bn:layout=tokens", 12), Reference(12)
    _assert_same(ours, ref, (4, 5, 12))
    torch.testing.assert_close(ours.running_var, ref.running_var)


@pytest.mark.parametrize(
    "spec", ["gn:groups=4", "ln", "in", "frn", "evonorm_s0:groups=4", "evonorm_b0", "bgn:groups=2", "dyt"]
)
def test_tokens_layout_is_the_channels_first_view(spec: str) -> None:
    tokens, channels = (
        build_norm(f"{spec},layout=tokens" if ":" in spec else f"{spec}:layout=tokens", 8),
        build_norm(spec, 8),
    )
    channels.load_state_dict(tokens.state_dict())
    x = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(tokens(x), channels(x.transpose(1, 2)).transpose(1, 2))


def test_channels_layer_hints_at_tokens_for_channels_last_input() -> None:
    with pytest.raises(ValueError, match="set layout=tokens"):
        build_norm("pn", 8)(torch.randn(2, 5, 8))


@pytest.mark.parametrize(
    "spec",
    [
        "pn:layout=tokens",
        "pn:layout=tokens,center=false,scale=rms,affine=gain",
        "gn:groups=4,layout=tokens",
        "bn:layout=tokens",
        "frn:layout=tokens",
        "dyt",
        "dyt:layout=tokens",
        "ln:act=dyt",
    ],
)
def test_exported_layers_keep_the_layout_and_dyt(spec: str) -> None:
    cfg = parse_spec(spec)
    shape = (4, 5, 8) if cfg.layout == "tokens" else (4, 8, 3, 3)
    assert_same_layer(exported_layer(cfg, 8), build_norm(cfg, 8), shape, seed=4, label=spec)


def test_dyt_is_the_papers_formula() -> None:
    layer = build_norm("dyt", 6)
    assert layer.alpha.shape == () and layer.alpha.item() == 0.5
    x = torch.randn(2, 6, 3, 3)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5), layer.bias.uniform_(-1, 1), layer.alpha.fill_(0.8)
    expected = layer.weight.view(1, -1, 1, 1) * torch.tanh(0.8 * x) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_timm_vit_with_tokens_layers_and_exports() -> None:
    """A tiny timm ViT normalised by tokens-layout layers (ours and exported) trains; state dicts move."""
    spec = "pn:layout=tokens,center=false,scale=rms,affine=gain"
    kwargs = {"num_classes": 4, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
    exported = load(export_source(spec, class_name="Exported"), spec)["Exported"]
    torch.manual_seed(0)
    ours = timm.create_model("vit_tiny_patch16_224", pretrained=False, norm_layer=norm_layer(spec), **kwargs)
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, norm_layer=exported, **kwargs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert sum(isinstance(m, UnifiedNorm) for m in ours.modules()) == 5  # 2 per block + the final norm
