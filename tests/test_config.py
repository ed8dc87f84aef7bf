"""NormConfig: validation, the spec grammar and its round trip, presets, slots."""

from __future__ import annotations

import itertools
import random

import pytest
from torch import nn

from normsearch import PRESETS, NormConfig, build_norm, build_norm_act, parse_spec
from normsearch.norm import TLU, ScaledReLU, UnifiedNorm, as_config
from normsearch.norm.config import ACTS, AFFINES, PARTITIONS, SCALES, WEIGHTS


def test_every_preset_parses_and_prints_as_its_name():
    for name in PRESETS:
        assert parse_spec(name).spec() == name


def test_preset_options_are_applied():
    cfg = parse_spec("gn:group_size=4")
    assert (cfg.partition, cfg.groups, cfg.group_size) == ("group", None, 4)
    assert build_norm("gn:group_size=4", 16).groups == 4
    assert parse_spec("bn:momentum=0.05").momentum == 0.05
    assert parse_spec("gn:partition=layer") == parse_spec("ln")
    assert as_config({"preset": "gn", "groups": 8}) == parse_spec("gn:groups=8")
    assert as_config({"partition": "instance"}) == parse_spec("in")


def _random_configs(n: int, seed: int = 0):
    """Seeded random draws over every option's domain; invalid combinations are dropped."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        options = {
            "partition": rng.choice(PARTITIONS),
            "center": rng.random() < 0.5,
            "scale": rng.choice(SCALES),
            "eps": rng.choice([1e-5, 1e-3, 0.1]),
            "affine": rng.choice(AFFINES),
            "act": rng.choice(ACTS),
            "weight": rng.choice(WEIGHTS),
        }
        if options["partition"] in ("group", "batch_group") or rng.random() < 0.05:
            if rng.random() < 0.5:
                options["groups"] = rng.choice([1, 2, 4])
            else:
                options["group_size"] = rng.choice([1, 2, 8])
        if rng.random() < 0.3:
            options["running"] = rng.random() < 0.5
        if rng.random() < 0.3:
            options["momentum"] = rng.choice([0.01, 0.3])
        try:
            out.append(NormConfig(**options))
        except ValueError:
            continue
    return out


def test_spec_round_trips_for_random_configs():
    configs = _random_configs(300)
    assert len({c.partition for c in configs}) == len(PARTITIONS)
    for cfg in configs:
        assert parse_spec(cfg.spec()) == cfg, cfg
        assert parse_spec(str(cfg)) == cfg


def test_replace_revalidates():
    cfg = parse_spec("gn:groups=8")
    assert cfg.replace(groups=4).groups == 4
    assert cfg.replace(group_size=2) == parse_spec("gn:group_size=2")
    with pytest.raises(ValueError, match="'running' applies only"):
        parse_spec("ln").replace(running=True)


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("gx", r"unknown preset 'gx'; allowed: bn, ln"),
        ("gn:grups=8", r"unknown option 'grups'; allowed: partition, groups"),
        ("gn:groups=x", r"option 'groups' must be an integer"),
        ("gn:groups=0", r"option 'groups' must be a positive integer"),
        ("bn:scale=foo", r"option 'scale' must be one of std, rms, none"),
        ("bn:affine=yes", r"option 'affine' must be one of full, gain, none"),
        ("bn:partition=row", r"option 'partition' must be one of none, batch, layer"),
        ("ln:running=true", r"'running' applies only to partition in \['batch', 'batch_group'\]"),
        ("bn:running=false,momentum=0.1", r"'momentum' needs running=true"),
        ("bn:momentum=2", r"'momentum' must be a number in \(0, 1\]"),
        ("bn:eps=0", r"'eps' must be a number in \(0, 1\)"),
        ("partition=group", r"needs exactly one of 'groups' or 'group_size'"),
        ("gn:groups=4,group_size=4", r"needs exactly one of 'groups' or 'group_size'"),
        ("ln:groups=2", r"'groups'/'group_size' apply only to partition in"),
        ("ln:center=false,scale=none", r"normalizes nothing: use partition=none"),
        ("none:center=true", r"partition=none computes no statistics"),
        ("none:act=evo_b0", r"needs partition != none"),
        ("bn:act=evo_b0,scale=none,center=true", r"act=evo_b0 .* needs scale=std or rms"),
        ("gn:groups", r"expected key=value"),
        ("gn:groups=2,groups=4", r"option 'groups' given twice"),
        ("", r"non-empty string"),
    ],
)
def test_bad_specs_raise_one_clear_error(spec, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        parse_spec(spec)
    assert "\n" not in str(info.value)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"'groups'=32 does not divide num_channels=16"):
        build_norm("gn", 16)
    with pytest.raises(ValueError, match=r"'group_size'=3 does not divide num_channels=16"):
        build_norm("gn:group_size=3", 16)


def test_build_norm_accepts_every_spec_form():
    cfg = parse_spec("gn:groups=8")
    for spec in ("gn:groups=8", {"preset": "gn", "groups": 8}, cfg):
        m = build_norm(spec, 16)
        assert isinstance(m, UnifiedNorm) and m.config == cfg and m.groups == 8
    with pytest.raises(ValueError, match="a norm spec is a string, a mapping or a NormConfig"):
        build_norm(3, 16)


def test_slots_place_layers_as_the_paper_networks_do():
    norm, act = build_norm_act(parse_spec("bn"), 8)
    assert isinstance(norm, UnifiedNorm) and isinstance(act, nn.ReLU)
    norm, act = build_norm_act(parse_spec("frn"), 8)
    assert isinstance(act, TLU) and norm.config.act == "none" and norm.tau is None
    norm, act = build_norm_act(parse_spec("evonorm_b0"), 8)
    assert isinstance(norm, nn.Identity) and isinstance(act, UnifiedNorm)
    norm, act = build_norm_act(parse_spec("wn"), 8)
    assert isinstance(norm, nn.Identity) and isinstance(act, ScaledReLU)
    norm, act = build_norm_act(parse_spec("sws"), 8)
    assert isinstance(norm, nn.Identity) and isinstance(act, nn.ReLU)


def test_scaled_relu_has_zero_mean_unit_variance_on_gaussians():
    import torch

    y = ScaledReLU()(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert abs(y.mean().item()) < 0.01 and abs(y.var().item() - 1) < 0.02


@pytest.mark.parametrize(
    "a, b", list(itertools.combinations(["bn", "ln", "in", "gn", "rms", "pn", "frn"], 2))
)
def test_distinct_presets_have_distinct_configs(a, b):
    assert parse_spec(a) != parse_spec(b)
