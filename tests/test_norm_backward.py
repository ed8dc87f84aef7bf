"""Hand-derived backwards of the functional core (``Folded``, ``EvoB0``) against finite differences
(``torch.autograd.gradcheck``, float64, small inputs): every partition with per-(sample, channel) statistics ×
centering × scale × affine × act, batch statistics and running estimates."""

from __future__ import annotations

import contextlib
import itertools
import zlib

import pytest
import torch

from normsearch.norm import NormConfig, functional, primitives, primitives_aten
from normsearch.norm.config import BATCH_PARTITIONS
from normsearch.norm.layer import generic_kernel_of

C = 4
SHAPE = (3, C, 2, 3)
FOLDED_PARTITIONS = ("batch", "batch_group", "layer", "instance", "group")


def _folded_configs() -> list[NormConfig]:
    configs = []
    options = itertools.product(
        FOLDED_PARTITIONS,
        (True, False),
        ("std", "rms", "none"),
        ("full", "gain", "none"),
        ("none", "tlu", "evo_s0", "evo_b0"),
    )
    for partition, center, scale, affine, act in options:
        groups = 2 if partition in ("group", "batch_group") else None
        try:
            cfg = NormConfig(
                partition=partition, groups=groups, center=center, scale=scale, affine=affine, act=act
            )
        except ValueError:
            continue
        if generic_kernel_of(cfg) in ("folded", "evo_b0"):
            configs.append(cfg)
    return configs


CONFIGS = _folded_configs()


def _inputs(cfg: NormConfig, gen: torch.Generator) -> dict[str, torch.Tensor | None]:
    """x with a per-channel offset, and random parameters (τ spread so that TLU kinks are rare)."""

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).requires_grad_(True)

    return {
        "x": rand(*SHAPE, scale=1.5, shift=0.3),
        "weight": rand(C, scale=0.5, shift=1.0) if cfg.affine != "none" else None,
        "bias": rand(C, scale=0.5) if cfg.affine == "full" else None,
        "tau": rand(C, scale=0.5) if cfg.act == "tlu" else None,
        "v": rand(C, scale=0.5, shift=1.0) if cfg.act in ("evo_s0", "evo_b0") else None,
    }


def _folded(cfg: NormConfig, running: tuple[torch.Tensor, torch.Tensor] | None):
    """The config's Function as a function of (x, γ, β, τ, v)."""
    groups = cfg.num_groups(C)
    stats = running if running is not None else (None, None)
    options = groups, cfg.partition in BATCH_PARTITIONS, cfg.center, cfg.scale

    def fn(x, weight, bias, tau, v):
        if cfg.act == "evo_b0":
            return functional.EvoB0.apply(x, weight, bias, v, *stats, *options, cfg.eps)[0]
        return functional.Folded.apply(x, weight, bias, tau, v, *stats, *options, cfg.act, cfg.eps)[0]

    return fn


def test_the_matrix_covers_every_option():
    assert {c.partition for c in CONFIGS} == set(FOLDED_PARTITIONS)
    assert {(c.center, c.scale, c.affine, c.act) for c in CONFIGS} >= {
        (True, "std", "full", "none"),
        (False, "rms", "full", "tlu"),
        (False, "std", "full", "evo_s0"),
        (True, "none", "gain", "tlu"),
        (False, "std", "full", "evo_b0"),
        (True, "rms", "none", "evo_b0"),
    }


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.spec())
def test_folded_backward_matches_finite_differences(cfg):
    gen = torch.Generator().manual_seed(zlib.crc32(cfg.spec().encode()))
    inputs = _inputs(cfg, gen)
    assert torch.autograd.gradcheck(_folded(cfg, None), tuple(inputs.values()), atol=1e-6, rtol=1e-5)
    if cfg.partition in BATCH_PARTITIONS:  # eval mode: running estimates are constants
        groups = cfg.num_groups(C)
        running = (
            torch.randn(groups, dtype=torch.float64, generator=gen),
            torch.rand(groups, dtype=torch.float64, generator=gen) + 0.5,
        )
        assert torch.autograd.gradcheck(_folded(cfg, running), tuple(inputs.values()), atol=1e-6, rtol=1e-5)


def _position_configs() -> list[NormConfig]:
    configs = []
    for center, scale, affine, act in itertools.product(
        (True, False), ("std", "rms", "none"), ("full", "gain", "none"), ("none", "tlu")
    ):
        with contextlib.suppress(ValueError):  # no statistics at all: not a position config
            configs.append(
                NormConfig(partition="position", center=center, scale=scale, affine=affine, act=act)
            )
    return configs


POSITION_CONFIGS = _position_configs()


def test_the_position_configs_run_on_the_positional_kernel():
    assert len(POSITION_CONFIGS) >= 30
    assert {generic_kernel_of(cfg) for cfg in POSITION_CONFIGS} == {"position"}


@pytest.mark.parametrize("cfg", POSITION_CONFIGS, ids=lambda c: c.spec())
def test_positional_backward_matches_finite_differences(cfg):
    """``Positional``'s hand-written backward (statistics over C at each position) against finite differences."""
    center, scale = cfg.center, cfg.scale
    gen = torch.Generator().manual_seed(zlib.crc32(cfg.spec().encode()))
    inputs = _inputs(cfg, gen)
    inputs.pop("v")

    def fn(x, weight, bias, tau):
        return functional.Positional.apply(x, weight, bias, tau, center, scale, cfg.eps)

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("affine", ["full", "gain", "none"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (3, 4, 6), (3, 4), "tokens"])
def test_dynamic_tanh_backward_matches_finite_differences_and_the_formula(affine, shape):
    """DyT's hand-written backward (``DynamicTanh``) against finite differences, and its output against the
    formula γ · tanh(α · y) + β, channels first and on a tokens layout's channels-first view (strided)."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{affine}{shape}".encode()))
    if shape == "tokens":
        y = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64).movedim(
            -1, 1
        )  # (N, L, C) seen as (N, C, L)
    else:
        y = torch.randn(*shape, generator=gen, dtype=torch.float64)
    c = y.shape[1]
    alpha = torch.tensor(0.7, dtype=torch.float64)
    weight = torch.randn(c, generator=gen, dtype=torch.float64) if affine != "none" else None
    bias = torch.randn(c, generator=gen, dtype=torch.float64) if affine == "full" else None
    inputs = [t.requires_grad_() if t is not None else None for t in (y, alpha, weight, bias)]
    assert torch.autograd.gradcheck(functional.DynamicTanh.apply, tuple(inputs), atol=1e-6, rtol=1e-5)
    expected = torch.tanh(alpha * y) * (1 if weight is None else functional.per_channel(weight, y))
    expected = expected + (0 if bias is None else functional.per_channel(bias, y))
    torch.testing.assert_close(functional.DynamicTanh.apply(*inputs), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("act", ["tlu", "evo_b0"])
def test_double_backward_is_refused_not_wrong(act):
    cfg = NormConfig(partition="instance", center=False, scale="rms", act=act)
    inputs = _inputs(cfg, torch.Generator().manual_seed(0))
    y = _folded(cfg, None)(*inputs.values())
    (grad_x,) = torch.autograd.grad(y.square().sum(), inputs["x"], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("shape", [(3, 8, 4, 5), (3, 8, 7), (3, 8)])
def test_public_primitives_match_the_fused_ones(shape):
    """The exported files' primitives (public torch APIs) and the library's (torch's internal fused
    kernels) give the same values on the torch installed: the layer and its export run the same core."""
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=gen) * 2 + 0.5
    t, g, u = (torch.randn(shape, generator=gen) for _ in range(3))
    s = torch.sigmoid(u)
    for groups in (1, 2, 8):
        public = primitives.group_moments(x, groups, 1e-5)
        fused = primitives_aten.group_moments(x, groups, 1e-5)
        assert public[0].shape == public[1].shape == (shape[0], groups) and public[2].shape == x.shape
        torch.testing.assert_close(public[0], fused[0])
        torch.testing.assert_close(public[1], fused[1], atol=1e-5, rtol=1e-5)
    for public, fused in zip(primitives.row_sums(t, x), primitives_aten.row_sums(t, x), strict=True):
        torch.testing.assert_close(public, fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        primitives.relu_grad(g, u, out=u.clone()),
        primitives_aten.relu_grad(g, u, out=u.clone()),
        rtol=0,
        atol=0,
    )
    expected = torch.where(u > 0, g, 0.0)
    into_g, into_u = g.clone(), u.clone()  # in place into either input
    assert primitives.relu_grad(into_g, u, out=into_g) is into_g
    assert primitives.relu_grad(g, into_u, out=into_u) is into_u
    torch.testing.assert_close(into_g, expected, rtol=0, atol=0)
    torch.testing.assert_close(into_u, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        primitives.sigmoid_grad_(g.clone(), s), primitives_aten.sigmoid_grad_(g.clone(), s), rtol=0, atol=0
    )
    torch.testing.assert_close(primitives.sigmoid_grad_(g.clone(), s), g * s * (1 - s))
