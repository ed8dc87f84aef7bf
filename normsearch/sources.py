"""Networks from elsewhere: torchvision and timm builders, and the user's own, normalized by a candidate.

A model name (the ``model`` setting of ``probe:`` / ``confirm:``, ``--model``) is one of

- ``resnet``, ``cnn``: the paper's networks (:mod:`normsearch.models`);
- ``torchvision:NAME[,key=value...]``: a torchvision classification builder that takes ``norm_layer``
  (resnet18/34/50/…, resnext*, wide_resnet*, regnet_*, mobilenet_v2/v3, efficientnet_b0–b4, convnext_*,
  and, with ``layout=tokens``, vit_* / swin_*), built with ``weights=None``;
- ``timm:NAME[,key=value...]``: ``timm.create_model(NAME, pretrained=False, norm_layer=...)`` (needs the
  ``timm`` extra), with :func:`~normsearch.norm.norm_act_layer` as ``norm_layer``: timm's convnets
  (efficientnet_*, regnet*, mobilenet*) make it a norm+act layer holding their activation; ``img_size``
  follows the data where the model takes it;
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
- torchvision builders take 3 input channels: 1-channel data is repeated to 3 (``RepeatChannels``); so is
  it for a user's function without an ``in_channels`` argument whose first conv takes 3 (:func:`fit_channels`).

Network options: what a model takes besides the norm layer, searched by a space's ``network:`` section
(:class:`NetworkOptions`). A user's ``FUNC`` takes its **keyword-only** arguments as options
(:func:`function_options`: kind from the annotation — ``bool``, ``int``, ``float``, ``str`` or a ``Literal``
of values — else from the default's type); torchvision and timm builders take none for now.

``resolve_model(name)`` checks a name once (unknown names, missing files, import errors, builders that take no
``norm_layer``) and raises ``ValueError`` with one line saying what is wrong and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .candidate import as_text, read_value
from .norm import NormConfig, UnifiedNorm, norm_act_layer, norm_layer
from .norm.config import Allowed
from .norm.conv import RELU_GAIN
from .userfunc import IN_PROCESS, elsewhere, load_function, one_line

BUILTIN = ("resnet", "cnn", "gpt")
FORMS = "resnet, cnn, gpt, torchvision:NAME, timm:NAME, FILE.py:FUNC or package.module:FUNC"
SCALARS = (bool, int, float, str)
"""The kinds a network option may have."""


def _kind_name(kind: type | None) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "a YAML scalar"
    )


@dataclass(frozen=True)
class NetworkOption:
    """One option of a network, a keyword argument of its builder: ``kind`` (one of :data:`SCALARS`, None: any
    scalar), ``default`` (:data:`inspect.Parameter.empty`: none), ``choices`` (the only values allowed; empty:
    any value of the kind), ``help`` (what it does, one line)."""

    name: str
    kind: type | None
    default: Any = inspect.Parameter.empty
    choices: tuple[Any, ...] = ()
    help: str = ""
    rule: Allowed | None = None
    """A built-in network's rule for the value (bounds, None allowed when the default is None)."""

    def allowed(self) -> str:
        """What the option may take, for messages: ``true or false``, ``one of pre, post``, ``an integer``."""
        if self.rule is not None:
            return self.rule.text()
        if self.choices:
            return f"one of {', '.join(map(as_text, self.choices))}"
        return _kind_name(self.kind)

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is allowed, else what is allowed. Strings must read back as strings from a config
        string (no ``,|=`` or spaces, not a number or true/false)."""
        if self.rule is not None:
            return self.rule.problem(value, none_ok=self.default is None)
        if self.choices:
            ok = any(type(value) is type(c) and value == c for c in self.choices)
        elif self.kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif self.kind is None:
            ok = isinstance(value, SCALARS)
        else:
            ok = type(value) is self.kind
        if ok and isinstance(value, str):
            ok = bool(value) and read_value(value) == value and not any(c in value for c in ",|= ")
        return None if ok else self.allowed()


@dataclass(frozen=True)
class NetworkOptions:
    """The options a model takes (``options``, in its builder's order); ``note`` says why a model takes none
    (errors quote it); ``other_arguments``: its builder's arguments that are not options (positional ones)."""

    model: str
    options: tuple[NetworkOption, ...] = ()
    note: str = ""
    other_arguments: tuple[str, ...] = ()

    def get(self, name: str) -> NetworkOption | None:
        return next((option for option in self.options if option.name == name), None)

    def unknown(self, name: str) -> str:
        """Why ``name`` is not an option of this model, and what is allowed (one line)."""
        if name in self.other_arguments:
            return (
                f"{name} is not a keyword-only argument of {self.model}: only those are network options "
                f"(def FUNC(norm_layer, num_classes, *, {name}=...)); its keyword-only arguments: "
                f"{', '.join(o.name for o in self.options) or 'none'}"
            )
        if not self.options:
            return f"unknown network option; {self.note or f'{self.model} takes no network options'}"
        return f"unknown network option of {self.model}; allowed: {', '.join(o.name for o in self.options)}"

    def check(self, network: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` (one line) for an option this model does not take or a value it does not
        allow."""
        for name, value in network.items():
            option = self.get(name)
            if option is None:
                raise ValueError(f"network option {name}: {self.unknown(name)}")
            allowed = option.problem(value)
            if allowed is not None:
                raise ValueError(f"network option {name} of {self.model} must be {allowed}, got {value!r}")


def _option_kind(annotation: Any, default: Any) -> tuple[type | None, tuple[Any, ...]]:
    """(kind, choices) of a keyword-only argument, from its annotation, else from its default's type."""
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        kinds = {type(c) for c in choices}
        return (kinds.pop() if len(kinds) == 1 else None), tuple(choices)
    if annotation in SCALARS:
        return annotation, ()
    if default is not inspect.Parameter.empty and type(default) in SCALARS:
        return type(default), ()
    return None, ()


def function_options(name: str, fn: Callable[..., Any]) -> NetworkOptions:
    """The network options of a user's builder: its keyword-only arguments (see the module docstring)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return NetworkOptions(name, note=f"the signature of {name} cannot be read")
    try:
        hints = get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: fall back to the defaults
        hints = {}
    options, others = [], []
    for parameter in signature.parameters.values():
        if parameter.kind == inspect.Parameter.KEYWORD_ONLY:
            kind, choices = _option_kind(hints.get(parameter.name, parameter.annotation), parameter.default)
            options.append(NetworkOption(parameter.name, kind, parameter.default, choices))
        elif parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY):
            others.append(parameter.name)
    note = f"{name} has no keyword-only arguments (def FUNC(norm_layer, num_classes, *, option=default))"
    return NetworkOptions(name, tuple(options), note, tuple(others))


@dataclass(frozen=True)
class ModelSource:
    """A resolved foreign model name: ``builder(norm_layer, num_classes, in_channels, resolution)``, given
    ``factory(cfg)`` as ``norm_layer`` (timm's: :func:`~normsearch.norm.norm_act_layer`)."""

    name: str
    builder: Callable[..., nn.Module] = field(compare=False)
    factory: Callable[[NormConfig], Callable[..., nn.Module]] = field(default=norm_layer, compare=False)
    options: NetworkOptions | None = field(default=None, compare=False)
    """What the builder takes as network options (``builder(..., **network)``); None: none."""

    def network_options(self) -> NetworkOptions:
        """The model's network options (none for torchvision and timm builders, for now)."""
        if self.options is not None:
            return self.options
        return NetworkOptions(
            self.name, note=f"{self.name.partition(':')[0]} builders take no network options for now"
        )

    def build(
        self,
        cfg: NormConfig,
        *,
        num_classes: int,
        in_channels: int,
        resolution: int | None,
        network: Mapping[str, Any] | None = None,
    ) -> nn.Module:
        """A freshly initialised model (torch's global RNG) whose norm slots are ``cfg``'s layer, built with
        the ``network`` options (``ValueError`` for one it does not take)."""
        network = dict(network or {})
        self.network_options().check(network)
        try:
            model = self.builder(self.factory(cfg), num_classes, in_channels, resolution, **network)
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


def _split(name: str, rest: str) -> tuple[str, dict[str, Any]]:
    """``NAME,key=value,...`` → (NAME, keywords)."""
    head, *items = [part.strip() for part in rest.split(",")]
    keywords = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"model {name!r}: expected key=value after the name, got {item!r}")
        keywords[key.strip()] = read_value(value)
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

    return ModelSource(name, build, factory=norm_act_layer)  # timm's convnets build norm+act layers


def _user(name: str, where: str, function: str) -> ModelSource:
    fn = load_function(f"model {name!r}", where, function, "FUNC(norm_layer, num_classes) -> nn.Module")
    return _from_function(name, fn)


def _from_function(name: str, fn: Callable[..., nn.Module]) -> ModelSource:
    try:
        takes_channels = "in_channels" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_channels = False

    def build(
        factory: Callable, num_classes: int, in_channels: int, resolution: int | None, **network: Any
    ) -> nn.Module:
        if takes_channels:
            return fn(factory, num_classes, in_channels=in_channels, **network)
        return fit_channels(fn(factory, num_classes, **network), in_channels)

    options = function_options(name, fn)
    other = tuple(a for a in options.other_arguments if a not in ("norm_layer", "num_classes", "in_channels"))
    kept = tuple(o for o in options.options if o.name != "in_channels")
    return ModelSource(name, build, options=dataclasses.replace(options, options=kept, other_arguments=other))


def fit_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """A user's model for data of ``in_channels`` channels, judged by its first ``nn.Conv2d``: as it is when
    they match (or it has no conv), 1-channel data repeated to 3 (:class:`RepeatChannels`) for a model built
    for RGB, else ``ValueError`` naming both counts and the fix."""
    if not isinstance(model, nn.Module):  # ModelSource.build says what it is
        return model
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels == in_channels:
        return model
    if (first.in_channels, in_channels) == (3, 1):
        return RepeatChannels(model)
    raise ValueError(
        f"its first conv takes {first.in_channels} input channels and the data has {in_channels}: give the "
        "function an in_channels argument and build its first conv with it"
    )


class ModelUnavailable(ValueError):
    """A ``python:`` model name (:func:`register_model`) in a process that does not hold its function; the
    message names the fix."""


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
    name = f"{IN_PROCESS}{qualname or type(builder).__name__}"
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
    if name.startswith(IN_PROCESS):
        raise ModelUnavailable(elsewhere(f"model {name!r}", "FILE.py:FUNC or package.module:FUNC"))
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
    """Raise ``ValueError`` if ``name`` cannot be resolved (settings validation). An in-process ``python:``
    name is valid anywhere (a study's stored settings carry it); building it where it is not registered
    raises :class:`ModelUnavailable`."""
    if isinstance(name, str) and name.startswith(IN_PROCESS):
        return
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
    "SCALARS",
    "ModelSource",
    "ModelUnavailable",
    "NetworkOption",
    "NetworkOptions",
    "RepeatChannels",
    "check_model_name",
    "fit_channels",
    "function_options",
    "in_process_only",
    "network_label",
    "register_model",
    "reparametrize_convs",
    "resolve_model",
]
