"""Networks from elsewhere: torchvision and timm builders, and the user's own, normalized by a candidate.

A model name (the ``model`` setting of ``probe:`` / ``confirm:``, ``--model``) is one of

- ``resnet``, ``cnn``: the paper's networks (:mod:`normsearch.models`);
- ``torchvision:NAME[,key=value...]``: a torchvision classification builder that takes ``norm_layer``
  (resnet18/34/50/…, resnext*, wide_resnet*, regnet_*, mobilenet_v2/v3, efficientnet_b0–b4, convnext_*,
  and, with ``layout=tokens``, vit_* / swin_*), built with ``weights=None``;
- ``timm:NAME[,key=value...]``: ``timm.create_model(NAME, pretrained=False, norm_layer=...)`` (needs the
  ``timm`` extra); ``img_size`` follows the data where the model takes it;
- ``FILE.py:FUNC`` or ``package.module:FUNC``: the user's ``FUNC(norm_layer, num_classes) -> nn.Module``
  (also given ``in_channels=`` when its signature names it).

``key=value`` items are passed to the builder (ints, floats, true/false, else strings), e.g.
``timm:vit_tiny_patch16_224,patch_size=4,depth=4``. ``norm_layer`` is the candidate's factory
(:func:`normsearch.norm.norm_layer`): every normalization slot is the candidate's layer, whatever the
architecture. What differs from the paper's networks, where the candidate also owns the activation slot:

- the model keeps its own activations; TLU and EvoNorm stay inside the norm layer, before them;
- weight schemes (``weight=weight_norm`` / ``scaled_ws``) reparametrize every ``nn.Conv2d`` of the model
  through ``torch.nn.utils.parametrize`` (Ŵ as :mod:`normsearch.norm.conv`, gain ``parametrizations.weight.0.gain``);
  WN's scaled ReLU is not added (the model's activation stays);
- torchvision builders take 3 input channels: 1-channel data is repeated to 3 (``RepeatChannels``).

``resolve_model(name)`` checks a name once (unknown names, missing files, import errors, builders that take no
``norm_layer``) and raises ``ValueError`` with one line saying what is wrong and what is allowed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .norm import NormConfig, UnifiedNorm, norm_layer
from .norm.conv import RELU_GAIN
from .userfunc import load_function, one_line

BUILTIN = ("resnet", "cnn", "gpt")
FORMS = "resnet, cnn, gpt, torchvision:NAME, timm:NAME, FILE.py:FUNC or package.module:FUNC"


@dataclass(frozen=True)
class ModelSource:
    """A resolved foreign model name: ``builder(norm_layer, num_classes, in_channels, resolution)``."""

    name: str
    builder: Callable[..., nn.Module] = field(compare=False)

    def build(
        self, cfg: NormConfig, *, num_classes: int, in_channels: int, resolution: int | None
    ) -> nn.Module:
        """A freshly initialised model (torch's global RNG) whose norm slots are ``cfg``'s layer."""
        try:
            model = self.builder(norm_layer(cfg), num_classes, in_channels, resolution)
        except (TypeError, ValueError, RuntimeError, AssertionError) as err:
            raise ValueError(
                f"model {self.name!r} could not be built with {cfg.spec()}: {one_line(err)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model {self.name!r}: the builder returned {type(model).__name__}, not an nn.Module"
            )
        if not any(isinstance(m, UnifiedNorm) for m in model.modules()):
            raise ValueError(
                f"model {self.name!r} has no normalization layer built by the norm_layer it was given: "
                "nothing to search"
            )
        if cfg.weight != "none":
            reparametrize_convs(model, cfg)
        return model


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def _split(name: str, rest: str) -> tuple[str, dict[str, Any]]:
    """``NAME,key=value,...`` → (NAME, keywords)."""
    head, *items = [part.strip() for part in rest.split(",")]
    keywords = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"model {name!r}: expected key=value after the name, got {item!r}")
        keywords[key.strip()] = _value(value)
    return head, keywords


class RepeatChannels(nn.Module):
    """(N, 1, H, W) → (N, 3, H, W) by repetition, in front of a model built for RGB."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.expand(-1, 3, *x.shape[2:]))


def _refuses_norm_layer(err: TypeError) -> bool:
    return "norm_layer" in str(err)


def _torchvision(name: str, rest: str) -> ModelSource:
    import torchvision

    arch, keywords = _split(name, rest)
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"model {name!r}: torchvision has no classification model {arch!r}; e.g. resnet18, "
            "resnet50, resnext50_32x4d, wide_resnet50_2, regnet_y_400mf, mobilenet_v2"
        )
    builder = torchvision.models.get_model_builder(arch)
    try:
        with torch.device("meta"):  # no memory, no init: only whether the builder takes norm_layer
            builder(weights=None, norm_layer=nn.BatchNorm2d, **keywords)
    except TypeError as err:
        if _refuses_norm_layer(err):
            raise ValueError(
                f"model {name!r}: torchvision's {arch} takes no norm_layer; normsearch needs "
                "one (e.g. resnet*, resnext*, wide_resnet*, regnet_*, mobilenet_*, convnext_*)"
            ) from None
        raise ValueError(f"model {name!r}: {one_line(err)}") from None
    except Exception:  # noqa: BLE001, S110 - some inits cannot run on meta tensors; the real build reports
        pass

    def build(factory: Callable, num_classes: int, in_channels: int, resolution: int | None) -> nn.Module:
        if in_channels not in (1, 3):
            raise ValueError(
                f"torchvision models take 3 input channels (1 is repeated); the data has {in_channels}"
            )
        model = builder(weights=None, num_classes=num_classes, norm_layer=factory, **keywords)
        return RepeatChannels(model) if in_channels == 1 else model

    return ModelSource(name, build)


def _timm(name: str, rest: str) -> ModelSource:
    try:
        import timm
    except ImportError:
        raise ValueError(f"model {name!r} needs timm: pip install 'normsearch[timm]'") from None
    arch, keywords = _split(name, rest)
    if not timm.is_model(arch):
        raise ValueError(f"model {name!r}: timm has no model {arch!r} (timm.list_models() lists them)")

    def build(factory: Callable, num_classes: int, in_channels: int, resolution: int | None) -> nn.Module:
        args = {
            "pretrained": False,
            "num_classes": num_classes,
            "in_chans": in_channels,
            "norm_layer": factory,
        }
        if resolution is not None and "img_size" not in keywords:
            try:
                return timm.create_model(arch, img_size=resolution, **args, **keywords)
            except TypeError as err:
                if "img_size" not in str(err):
                    raise
        return timm.create_model(arch, **args, **keywords)

    return ModelSource(name, build)


def _user(name: str, where: str, function: str) -> ModelSource:
    fn = load_function(f"model {name!r}", where, function, "FUNC(norm_layer, num_classes) -> nn.Module")
    return _from_function(name, fn)


def _from_function(name: str, fn: Callable[..., nn.Module]) -> ModelSource:
    try:
        takes_channels = "in_channels" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_channels = False

    def build(factory: Callable, num_classes: int, in_channels: int, resolution: int | None) -> nn.Module:
        extra = {"in_channels": in_channels} if takes_channels else {}
        return fn(factory, num_classes, **extra)

    return ModelSource(name, build)


_REGISTERED: dict[str, ModelSource] = {}
"""In-process builders (:func:`register_model`) by name."""


def register_model(builder: Callable[..., nn.Module]) -> str:
    """A model name for ``builder(norm_layer, num_classes[, in_channels]) -> nn.Module`` (Python API).

    ``module:function`` when the function can be imported by that name (other processes can then build
    it too), else ``python:QUALNAME``, known to this process only (the same name in a later process, so a
    study made with it resumes; a later registration of that name replaces the earlier)."""
    module, qualname = getattr(builder, "__module__", None), getattr(builder, "__qualname__", None)
    if module and module != "__main__" and qualname and qualname.isidentifier():
        name = f"{module}:{qualname}"
        try:
            if resolve_model(name) is not None:
                return name
        except ValueError:
            pass
    name = f"python:{qualname or type(builder).__name__}"
    _REGISTERED[name] = _from_function(name, builder)
    resolve_model.cache_clear()
    return name


def network_label(model: str, depth: int, width: int | None = None) -> str:
    """How output names a network: the paper's networks with their shape (``resnet-14``; with ``width``:
    ``resnet-14 width 32``), any other by its model name alone (``depth`` and ``width`` do not shape it)."""
    if model not in BUILTIN:
        return model
    return f"{model}-{depth}" + ("" if width is None else f" width {width}")


def in_process_only(name: str) -> bool:
    """Whether ``name`` is a ``python:`` :func:`register_model` builder: other processes cannot build it."""
    return name in _REGISTERED


@functools.cache
def resolve_model(name: str) -> ModelSource | None:
    """The source of a model name (``None`` for the built-in ``resnet`` / ``cnn``); ``ValueError`` with one
    line for a name that cannot be used (see the module docstring)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model must be one of {FORMS}; got {name!r}")
    if name in BUILTIN:
        return None
    if name in _REGISTERED:
        return _REGISTERED[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "torchvision":
        return _torchvision(name, rest)
    if sep and prefix == "timm":
        return _timm(name, rest)
    where, sep, function = name.rpartition(":")
    if sep and where and function.isidentifier():
        return _user(name, where, function)
    raise ValueError(f"unknown model {name!r}; allowed: {FORMS}")


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` if ``name`` cannot be resolved (settings validation)."""
    resolve_model(name)


# ---------------------------------------------------------------------------------------------------
# Weight schemes on foreign convs


class _WeightNorm(nn.Module):
    """Ŵ = g · W / (‖W‖ + eps) per output filter (``WeightNormConv2d``'s formula), g init 1."""

    def __init__(self, out_channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))

    def forward(self, weight: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(weight, dim=(1, 2, 3), keepdim=True)
        return self.gain * weight / (norm + self.eps)


class _ScaledWS(_WeightNorm):
    """Ŵ = γ · g · (W − mean) / ((std + eps) · √fan_in) per filter (``ScaledStdConv2d``'s formula)."""

    def forward(self, weight: Tensor) -> Tensor:
        std, mean = torch.std_mean(weight, dim=(1, 2, 3), correction=0, keepdim=True)
        scale = RELU_GAIN / weight[0].numel() ** 0.5
        return scale * self.gain * (weight - mean) / (std + self.eps)


def reparametrize_convs(model: nn.Module, cfg: NormConfig) -> int:
    """Register ``cfg``'s weight scheme on every ``nn.Conv2d`` of ``model``; returns how many."""
    cls = {"weight_norm": _WeightNorm, "scaled_ws": _ScaledWS}[cfg.weight]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        parametrize.register_parametrization(conv, "weight", cls(conv.out_channels, cfg.eps))
    return len(convs)


__all__ = [
    "BUILTIN",
    "FORMS",
    "ModelSource",
    "RepeatChannels",
    "check_model_name",
    "in_process_only",
    "network_label",
    "register_model",
    "reparametrize_convs",
    "resolve_model",
]
