"""Named presets: the known normalization layers as special cases of :class:`NormConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named layer: its options (over the config defaults), a one-line description and a reference."""

    options: dict[str, Any]
    title: str
    reference: str


_STATLESS = {"partition": "none", "center": False, "scale": "none", "affine": "none"}

PRESETS: dict[str, Preset] = {
    "bn": Preset({"partition": "batch"}, "BatchNorm", "Ioffe & Szegedy 2015"),
    "ln": Preset(
        {"partition": "layer"},
        "LayerNorm over (C, *S), per-channel affine",
        "Ba et al. 2016",
    ),
    "in": Preset({"partition": "instance"}, "InstanceNorm", "Ulyanov et al. 2016"),
    "gn": Preset({"partition": "group", "groups": 32}, "GroupNorm", "Wu & He 2018"),
    "rms": Preset(
        {"partition": "layer", "center": False, "scale": "rms", "affine": "gain"},
        "RMSNorm over (C, *S)",
        "Zhang & Sennrich 2019",
    ),
    "pn": Preset(
        {"partition": "position"},
        "Positional Norm (over C at each position)",
        "Li et al. 2019",
    ),
    "bgn": Preset(
        {"partition": "batch_group", "groups": 32},
        "Batch Group Norm",
        "Zhou et al. 2020",
    ),
    "frn": Preset(
        {"partition": "instance", "center": False, "scale": "rms", "act": "tlu"},
        "Filter Response Norm + TLU",
        "Singh & Krishnan 2020",
    ),
    "evonorm_s0": Preset(
        {"partition": "group", "groups": 32, "center": False, "act": "evo_s0"},
        "EvoNorm-S0",
        "Liu et al. 2020",
    ),
    "evonorm_b0": Preset(
        {"partition": "batch", "center": False, "act": "evo_b0"},
        "EvoNorm-B0",
        "Liu et al. 2020",
    ),
    "wn": Preset(
        {**_STATLESS, "weight": "weight_norm"},
        "Weight Normalization (conv)",
        "Salimans & Kingma 2016",
    ),
    "sws": Preset(
        {**_STATLESS, "weight": "scaled_ws"},
        "Scaled Weight Standardization (conv)",
        "Brock et al. 2021",
    ),
    "dyt": Preset(
        {**_STATLESS, "affine": "full", "act": "dyt"},
        "Dynamic Tanh: γ·tanh(α·x) + β",
        "Zhu et al. 2025",
    ),
    "derf": Preset(
        {**_STATLESS, "affine": "full", "act": "derf"},
        "Dynamic erf: γ·erf(α·x + s) + β",
        "Chen et al. 2025 (arXiv 2512.10938)",
    ),
    "none": Preset(dict(_STATLESS), "No normalization", "-"),
}
