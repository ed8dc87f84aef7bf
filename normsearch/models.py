"""The networks of "Beyond BatchNorm" (Lubana et al. 2021), built for any normalizer config.

Both networks take the norm/act slots from :func:`~normsearch.norm.build_norm_act` and the convs from
:func:`~normsearch.norm.build_conv` (Kaiming-normal, fan_in, ReLU gain; bias only for weight-based schemes),
so every config (activation norms, FRN+TLU, EvoNorm in the activation slot, weight norm with its scaled
ReLU, scaled WS) builds. Input (N, in_channels, H, W), output logits (N, num_classes). The linear head keeps
torch's default init, as the paper's code does.

- ``resnet``: the paper's CIFAR ResNet (ResNet-56 layout). depth = 6n + 2; stem conv → norm → act to
  ``width`` channels; 3 stages of n post-activation BasicBlocks with widths w / 2w / 4w (the paper: w = 32),
  stride 2 at the first block of stages 2 and 3. Block: h = act(norm(conv1 x)),
  out = act(s · norm(conv2 h) + shortcut(x)), shortcut = identity or a **3×3** stride-2 conv + norm slot;
  s is a learnable scalar initialised to 0 with ``skipinit`` (SkipInit, De & Smith 2020), else the constant 1.
  Then spatial mean and a linear head.
- ``cnn``: the paper's non-residual net (``cfg_10``/``cfg_40``): ``depth`` layers of 3×3 conv → norm → act,
  split evenly into 5 stages of widths w / 2w / 4w / 8w / 8w (the paper: w = 64); the last layer of each of
  the first 4 stages has stride 2, so the spatial size shrinks 16× (32 → 2 on CIFAR). No pooling; spatial
  mean and a linear head. (The paper's ``cfg_20`` narrows its 4th stage to 4w; this builder keeps 8w.)

Probe points: every network here has ``block_outputs()``, the activation-slot modules whose outputs are the
block outputs (ResNet: the stem's activation and each block's post-sum activation; CNN: each layer's
activation), and ``conv_layers()``, every conv, both in depth order (ResNet blocks: conv1, shortcut conv,
conv2). Forward hooks on them read activations and conv outputs without editing the network.

Network options (:data:`NETWORK_OPTIONS`, :func:`network_options`): the keyword arguments of a network besides
its shape that a space's ``network:`` section may search — ``resnet``: ``skipinit``; ``cnn``: none; a user's
``FUNC``: its keyword-only arguments (:func:`normsearch.sources.function_options`). A new network declares its
options once, in :data:`NETWORK_OPTIONS`, and takes them as keyword arguments of its class (beside
``skipinit``, which every class of :data:`MODELS` is given). A candidate is a
layer config and network options (:class:`CandidateConfig`), written ``LAYER_SPEC|key=value,...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .gpt import NETWORK_OPTIONS as GPT_OPTIONS
from .gpt import build_gpt
from .norm import NormConfig, Spec, as_config, build_conv, build_norm_act
from .sources import NetworkOption, NetworkOptions, resolve_model


class ProbedNetwork(Protocol):
    """What the probes need from a network (an ``nn.Module``): its probe points in depth order."""

    training: bool

    def __call__(self, x: Tensor) -> Tensor: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def block_outputs(self) -> list[nn.Module]: ...

    def conv_layers(self) -> list[nn.Conv2d]: ...


class ConvNormAct(nn.Module):
    """3×3 conv → norm slot → activation slot. (N, C_in, H, W) → (N, C_out, ⌈H/stride⌉, ⌈W/stride⌉)."""

    def __init__(self, cfg: NormConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = build_conv(cfg, in_channels, out_channels, 3, stride)
        self.norm, self.act = build_norm_act(cfg, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class Projection(nn.Module):
    """The downsampling shortcut: 3×3 conv (stride 2) → norm slot, no activation."""

    def __init__(self, cfg: NormConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = build_conv(cfg, in_channels, out_channels, 3, stride)
        self.norm = build_norm_act(cfg, out_channels)[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    """Post-activation block: act2(s · norm2(conv2 act1(norm1(conv1 x))) + shortcut(x))."""

    def __init__(
        self, cfg: NormConfig, in_channels: int, out_channels: int, stride: int, skipinit: bool
    ) -> None:
        super().__init__()
        self.conv1 = build_conv(cfg, in_channels, out_channels, 3, stride)
        self.norm1, self.act1 = build_norm_act(cfg, out_channels)
        self.conv2 = build_conv(cfg, out_channels, out_channels, 3, 1)
        self.norm2, self.act2 = build_norm_act(cfg, out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            Projection(cfg, in_channels, out_channels, stride) if needs_projection else nn.Identity()
        )
        self.skip_gain = nn.Parameter(torch.zeros(())) if skipinit else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.skip_gain is not None:
            out = self.skip_gain * out
        return self.act2(out + self.shortcut(x))

    def convs(self) -> list[nn.Conv2d]:
        """conv1, the shortcut conv (projection blocks only), conv2."""
        shortcut = [self.shortcut.conv] if isinstance(self.shortcut, Projection) else []
        return [self.conv1, *shortcut, self.conv2]


class CifarResNet(nn.Module):
    """The paper's CIFAR ResNet (see the module docstring); ``depth`` = 6n + 2 with n ≥ 1."""

    def __init__(
        self, cfg: NormConfig, *, depth: int, width: int, num_classes: int, in_channels: int, skipinit: bool
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 with n >= 1 (8, 14, 20, 56, 110, ...), got {depth}")
        per_stage = (depth - 2) // 6
        self.stem = ConvNormAct(cfg, in_channels, width, 1)
        blocks, channels = [], width
        for stage, multiple in enumerate((1, 2, 4)):
            for index in range(per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(cfg, channels, width * multiple, stride, skipinit))
                channels = width * multiple
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    def block_outputs(self) -> list[nn.Module]:
        """The stem's activation slot, then each block's post-sum activation slot (1 + 3n modules)."""
        return [self.stem.act, *(block.act2 for block in self.blocks)]

    def conv_layers(self) -> list[nn.Conv2d]:
        """The stem conv, then each block's conv1, shortcut conv (if any) and conv2."""
        return [self.stem.conv, *(conv for block in self.blocks for conv in block.convs())]


CNN_STAGE_WIDTHS = (1, 2, 4, 8, 8)
"""Widths of the CNN's five stages, in multiples of ``width`` (``cfg_10``: 64, 128, 256, 512, 512)."""


def cnn_layout(depth: int, width: int) -> list[tuple[int, int]]:
    """(out_channels, stride) of each CNN layer: 5 even stages, stride 2 at the end of stages 1–4."""
    stages = [len(CNN_STAGE_WIDTHS) * i // depth for i in range(depth)]
    last_stage = len(CNN_STAGE_WIDTHS) - 1
    return [
        (
            width * CNN_STAGE_WIDTHS[stage],
            2 if stage < last_stage and (i == depth - 1 or stages[i + 1] != stage) else 1,
        )
        for i, stage in enumerate(stages)
    ]


class PlainCNN(nn.Module):
    """The paper's non-residual CNN (see the module docstring); ``depth`` conv layers, depth ≥ 1."""

    def __init__(
        self, cfg: NormConfig, *, depth: int, width: int, num_classes: int, in_channels: int, skipinit: bool
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"cnn depth must be >= 1, got {depth}")
        if skipinit:
            raise ValueError("skipinit applies to the residual network only (model resnet), not cnn")
        layers, channels = [], in_channels
        for out_channels, stride in cnn_layout(depth, width):
            layers.append(ConvNormAct(cfg, channels, out_channels, stride))
            channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(x).mean(dim=(2, 3)))

    def block_outputs(self) -> list[nn.Module]:
        """Each layer's activation slot."""
        return [layer.act for layer in self.layers]

    def conv_layers(self) -> list[nn.Conv2d]:
        """Each layer's conv."""
        return [layer.conv for layer in self.layers]


MODELS: dict[str, Callable[..., nn.Module]] = {"resnet": CifarResNet, "cnn": PlainCNN, "gpt": build_gpt}
"""Built-in networks: ``kind`` → builder(cfg, depth=, width=, num_classes=, in_channels=, skipinit=, **network)
(``gpt``'s network options: :data:`normsearch.gpt.NETWORK_OPTIONS`, as :data:`NETWORK_OPTIONS` has them)."""

NETWORK_OPTIONS: dict[str, NetworkOptions] = {
    "resnet": NetworkOptions(
        "resnet",
        (
            NetworkOption(
                "skipinit", bool, False, help="residual scale s init 0 (SkipInit); overrides skipinit"
            ),
        ),
    ),
    "cnn": NetworkOptions("cnn", note="cnn takes no network options"),
    "gpt": NetworkOptions(
        "gpt",
        tuple(
            NetworkOption(name, rule.kind or str, default, rule.choices, rule=rule)
            for name, (default, rule) in GPT_OPTIONS.items()
        ),
    ),
}
"""The network options of each built-in network (see the module docstring), keyword arguments of its class."""


def network_options(model: str) -> NetworkOptions:
    """What network options ``model`` takes: :data:`NETWORK_OPTIONS` for a built-in network, a user's
    function's keyword-only arguments, none for torchvision and timm builders. ``ValueError`` for a model name
    that cannot be used."""
    if model in NETWORK_OPTIONS:
        return NETWORK_OPTIONS[model]
    source = resolve_model(model)
    return source.network_options() if source is not None else NetworkOptions(model)


MAX_DEPTH = 1000
"""Deepest network the settings accept (the paper's deepest is ResNet-110; ResNet-1001 is 6n+2 ≈ 1000)."""
MAX_WIDTH = 1024
"""Widest first stage the settings accept (the CNN's last stages are 8× this)."""
MAX_RESOLUTION = 1024
"""Largest input height = width the settings accept."""
ACTIVATION_LIMIT_GIB = 16
"""Largest estimated activation memory of one forward+backward pass (see :func:`activation_bytes`)."""
_TENSORS_PER_CONV = 8
"""Tensors of a conv's output size that one forward+backward pass keeps alive per conv (conv, norm, act, their
saved statistics and gradients): a generous factor, measured peaks were below it."""


def downsamplings(kind: str, depth: int) -> int:
    """How many times the network halves its input: resnet 2 (stages 2 and 3), cnn up to 4 (stages 1–4)."""
    if kind == "cnn":
        return sum(stride == 2 for _, stride in cnn_layout(depth, 1))
    return 2


def min_resolution(kind: str, depth: int) -> int:
    """Smallest input size whose last maps are still 2×2: at 1×1, instance-style statistics (one value per
    sample and channel) are constant and the layer collapses. resnet: 8; the paper's 10-layer cnn: 32."""
    return 2 * 2 ** downsamplings(kind, depth)


def default_resolution(kind: str, depth: int) -> int:
    """The probe resolution of a network when none is given: 16, or :func:`min_resolution` if larger (cnn 32,
    the CIFAR size the paper runs it at)."""
    return max(16, min_resolution(kind, depth))


def activation_bytes(kind: str, *, depth: int, width: int, resolution: int, batch_size: int) -> int:
    """Estimated memory of one forward+backward pass in float32: every conv's output size (channels × its
    map) summed over the network, × batch size × :data:`_TENSORS_PER_CONV` × 4 bytes."""
    if kind == "cnn":
        layers, side = [], resolution
        for channels, stride in cnn_layout(depth, width):
            side = -(-side // stride)
            layers.append(channels * side * side)
    else:
        per_stage = max((depth - 2) // 6, 1)
        layers = [width * resolution**2]
        for stage, multiple in enumerate((1, 2, 4)):
            side = -(-resolution // 2**stage)
            layers += [width * multiple * side * side] * (2 * per_stage + (stage > 0))
    return sum(layers) * batch_size * _TENSORS_PER_CONV * 4


def network_problem(
    kind: str, *, depth: int, width: int, resolution: int | None, batch_size: int
) -> tuple[str, str] | None:
    """(field, what is allowed) for settings no network of ``kind`` can run, or None: a resnet depth that is
    not 6n + 2, or an estimated memory above :data:`ACTIVATION_LIMIT_GIB` (when ``resolution`` is known)."""
    if kind == "resnet" and (depth < 8 or (depth - 2) % 6):
        return "depth", f"must be 6n+2 for resnet (8, 14, 20, 56, 110, ...), got {depth}"
    if resolution is None:
        return None
    gib = (
        activation_bytes(kind, depth=depth, width=width, resolution=resolution, batch_size=batch_size) / 2**30
    )
    if gib > ACTIVATION_LIMIT_GIB:
        return "resolution", (
            f"{kind}-{depth} width {width} at {resolution}px, batch {batch_size} needs about "
            f"{gib:.0f} GiB of activations; the limit is {ACTIVATION_LIMIT_GIB} GiB: lower "
            "resolution, batch_size, width or depth"
        )
    return None


def build_model(
    kind: str,
    spec: Spec,
    *,
    depth: int,
    width: int,
    num_classes: int = 10,
    in_channels: int = 1,
    skipinit: bool = False,
    resolution: int | None = None,
    network: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A freshly initialised ``kind`` network normalized by ``spec``: ``resnet``, ``cnn`` or ``gpt`` (depth
    and width apply to these, skipinit to resnet), or any model name of :mod:`normsearch.sources` (built for
    ``num_classes``, ``in_channels`` and, where the model takes it, the input ``resolution``), with the
    ``network`` options (:func:`network_options`; resnet's ``skipinit`` there overrides the argument).

    Initialisation draws from torch's global RNG (seed it for reproducibility). Raises ``ValueError`` for an
    unknown kind, an invalid spec, a bad depth/width, or a config that does not fit the network's channel
    counts (e.g. ``groups`` not dividing a stage width).
    """
    for name, value in (("width", width), ("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    cfg = as_config(spec)
    network = dict(network or {})
    source = resolve_model(kind)
    if source is not None:
        return source.build(
            cfg, num_classes=num_classes, in_channels=in_channels, resolution=resolution, network=network
        )
    network_options(kind).check(network)
    options = {"skipinit": skipinit, **network}
    try:
        return MODELS[kind](
            cfg, depth=depth, width=width, num_classes=num_classes, in_channels=in_channels, **options
        )
    except TypeError as err:
        raise ValueError(f"{kind}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{cfg.spec()} does not fit {kind} depth={depth} width={width}: {err}") from None


__all__ = [
    "MAX_DEPTH",
    "MAX_RESOLUTION",
    "MAX_WIDTH",
    "MODELS",
    "NETWORK_OPTIONS",
    "CifarResNet",
    "PlainCNN",
    "ProbedNetwork",
    "activation_bytes",
    "build_model",
    "cnn_layout",
    "default_resolution",
    "min_resolution",
    "network_options",
    "network_problem",
]
