"""Hand-derived backwards of the functional core (``Folded``, ``EvoB0``) against finite differences
(``torch.autograd.gradcheck``, float64, small inputs): every partition with per-(sample, channel) statistics ×
centering × scale × affine × act, batch statistics and running estimates."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

from normsearch.norm import NormConfig
from normsearch.norm import functional
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


@pytest.mark.parametrize("act", ["tlu", "evo_b0"])
def test_double_backward_is_refused_not_wrong(act):
    cfg = NormConfig(partition="instance", center=False, scale="rms", act=act)
    inputs = _inputs(cfg, torch.Generator().manual_seed(0))
    y = _folded(cfg, None)(*inputs.values())
    (grad_x,) = torch.autograd.grad(y.square().sum(), inputs["x"], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()
