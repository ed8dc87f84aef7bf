"""The probe / training networks: layout of the paper's ResNet and CNN, every preset builds and trains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normsearch.models import BasicBlock, Projection, build_model, cnn_layout
from normsearch.norm import (
    PRESETS,
    TLU,
    ScaledReLU,
    ScaledStdConv2d,
    UnifiedNorm,
    WeightNormConv2d,
    as_config,
    build_norm_act,
)


def _model(kind: str, spec: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    args = {"depth": 8 if kind == "resnet" else 5, "width": 32} | kw
    return build_model(kind, spec, **args)


@pytest.mark.parametrize("kind", ["resnet", "cnn"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_runs_and_trains(kind: str, preset: str) -> None:
    model = _model(kind, preset, width=32)
    size = 8 if kind == "resnet" else 32  # the cnn halves 4 times: keep 2×2 at the end
    x = torch.randn(8, 1, size, size, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model(x).shape == (8, 10)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]  # an ordinary trainable module: a few SGD steps on one batch fit it


def test_resnet_layout_matches_the_paper() -> None:
    model = _model("resnet", "bn", depth=20, width=16)
    blocks = list(model.blocks)
    assert len(blocks) == 9
    assert [b.conv2.out_channels for b in blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    projections = [b.shortcut for b in blocks if isinstance(b.shortcut, Projection)]
    assert len(projections) == 2  # stages 2 and 3 only
    for p in projections:  # normalized 3×3 stride-2 projection, as the paper's code
        assert p.conv.kernel_size == (3, 3) and p.conv.stride == (2, 2)
        assert isinstance(p.norm, UnifiedNorm)
    assert isinstance(model.stem.conv, nn.Conv2d) and model.stem.conv.out_channels == 16
    assert model.head.in_features == 64
    assert all(b.skip_gain is None for b in blocks)
    assert len(model.block_outputs()) == 10 and len(model.conv_layers()) == 1 + 9 * 2 + 2


def test_cnn_layout_scales_the_paper_cfgs() -> None:
    cfg_10 = [64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2), 512, 512]
    expected = [(c, 1) if isinstance(c, int) else c for c in cfg_10]
    assert cnn_layout(10, 64) == expected
    cfg_40 = [(64, 1)] * 7 + [(64, 2)] + [(128, 1)] * 7 + [(128, 2)] + [(256, 1)] * 7 + [(256, 2)]
    cfg_40 += [(512, 1)] * 7 + [(512, 2)] + [(512, 1)] * 8
    assert cnn_layout(40, 64) == cfg_40
    model = _model("cnn", "bn", depth=10, width=8)
    assert [layer.conv.out_channels for layer in model.layers] == [c // 8 for c, _ in expected]
    x = torch.randn(2, 1, 32, 32)
    assert model.layers(x).shape == (2, 64, 2, 2)  # 32 → 2: no pooling, 4 stride-2 convs
    assert len(model.block_outputs()) == len(model.conv_layers()) == 10


@pytest.mark.parametrize("preset", ["bn", "frn", "evonorm_b0", "wn", "sws", "none"])
def test_activation_slots_and_convs_come_from_the_factories(preset: str) -> None:
    cfg = as_config(preset)
    model = _model("resnet", preset)
    expected_act = type(build_norm_act(cfg, 32)[1])
    assert all(type(m) is expected_act for m in model.block_outputs())
    expected_conv = {"wn": WeightNormConv2d, "sws": ScaledStdConv2d}.get(preset, nn.Conv2d)
    assert all(type(c) is expected_conv for c in model.conv_layers())
    assert {"frn": TLU, "evonorm_b0": UnifiedNorm, "wn": ScaledReLU}.get(preset, nn.ReLU) is expected_act
    assert all((c.bias is not None) == (preset in ("wn", "sws")) for c in model.conv_layers())


def test_block_outputs_are_the_post_sum_activations() -> None:
    model = _model("resnet", "bn", depth=14, width=8)
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _a, out: seen.append(out)) for m in model.block_outputs()]
    outputs: list[torch.Tensor] = []
    handles += [b.register_forward_hook(lambda _m, _a, out: outputs.append(out)) for b in model.blocks]
    model(torch.randn(4, 1, 16, 16))
    for h in handles:
        h.remove()
    assert len(seen) == 1 + len(outputs)
    assert all(a is b for a, b in zip(seen[1:], outputs, strict=True))


def test_kaiming_normal_conv_init() -> None:
    model = _model("resnet", "bn", depth=8, width=32)
    conv = model.blocks[-1].conv2  # 128 × 128 × 3 × 3
    fan_in = conv.weight[0].numel()
    std = math.sqrt(2 / fan_in)  # fan_in, ReLU gain
    assert conv.weight.std().item() == pytest.approx(std, rel=0.03)
    assert abs(conv.weight.mean().item()) < 0.05 * std


def test_skipinit_makes_identity_blocks_pass_their_input_through() -> None:
    model = _model("resnet", "bn", depth=14, width=8, skipinit=True)
    gains = [b.skip_gain for b in model.blocks]
    assert all(isinstance(g, nn.Parameter) and g.item() == 0.0 for g in gains)
    assert sum(p is g for p in model.parameters() for g in gains) == len(gains)  # trainable
    block = model.blocks[1]  # stride 1, no projection
    x = torch.relu(torch.randn(4, 8, 16, 16))
    assert torch.equal(block(x), x)  # act(0 · branch + x) = x for x ≥ 0
    assert isinstance(block, BasicBlock)


def test_same_seed_same_network() -> None:
    a, b = _model("resnet", "gn", seed=3), _model("resnet", "gn", seed=3)
    c = _model("resnet", "gn", seed=4)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.stem.conv.weight, c.stem.conv.weight)


@pytest.mark.parametrize(
    ("kind", "spec", "kw", "message"),
    [
        ("resnet", "bn", {"depth": 9}, r"6n\+2"),
        ("resnet", "gn", {"width": 16}, "groups"),
        ("resnet", "gn:group_size=3", {"width": 16}, "group_size"),
        ("mlp", "bn", {}, "unknown model 'mlp'; allowed: resnet, cnn, gpt, torchvision:NAME"),
        ("cnn", "bn", {"skipinit": True}, "skipinit"),
        ("cnn", "bn", {"width": 0}, "width"),
        ("resnet", "nope", {}, "unknown preset"),
    ],
)
def test_invalid_networks_raise_value_error(kind: str, spec: str, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(kind, spec, **({"depth": 8, "width": 32} | kw))
