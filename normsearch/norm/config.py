"""The normalizer's configuration: one frozen dataclass spanning Π × Φ × Ψ, and its compact string form.

A config is validated once, when it is built (``NormConfig(...)``, :func:`parse_spec` or :func:`as_config`);
everything downstream trusts it. Every invalid combination raises one ``ValueError`` that names the option
and the allowed values.

String form (``spec``): ``PRESET[:key=value,key=value...]`` or ``key=value,...`` (overrides of the defaults),
for example ``"gn:groups=8"``, ``"bn:momentum=0.05"``, ``"in:scale=rms,center=false,act=tlu"``.
:meth:`NormConfig.spec` returns the shortest such string that parses back to the same config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

PARTITIONS = ("none", "batch", "layer", "instance", "group", "position", "batch_group")
"""Π: which elements share statistics, for an input of shape (N, C, *spatial)."""
BATCH_PARTITIONS = ("batch", "batch_group")
GROUPED_PARTITIONS = ("group", "batch_group")
SCALES = ("std", "rms", "none")
AFFINES = ("full", "gain", "none")
ACTS = ("none", "tlu", "evo_s0", "evo_b0", "dyt", "derf")
POINTWISE_ACTS = ("dyt", "derf")
"""Acts with a learnable scalar α (DyT, Derf): the ones ``alpha_init`` applies to."""
DEFAULT_ALPHA = 0.5
"""α's initial value when ``alpha_init`` is not given (DyT's 0.5, Zhu et al. 2025; used for Derf too)."""
WEIGHTS = ("none", "weight_norm", "scaled_ws")
LAYOUTS = ("channels", "tokens")
"""Where the channels are: ``channels`` (N, C, *S) as convs produce them; ``tokens`` (N, *L, C) as
transformers produce them (C last). A tokens input is computed as its channels-first view (N, C, *L), so every
partition keeps its meaning with the token axes as *S: ``position`` is the transformer LayerNorm/RMSNorm
over C of each token, ``batch`` BatchNorm over (N, *L), ``group`` per sample over (C/G, *L)."""


@dataclass(frozen=True)
class Allowed:
    """What one option may take (the ``allowed`` metadata of each :class:`NormConfig` field): one of
    ``choices``, or a value of ``kind`` (bool, int or float; True is not an int) with ``low`` < value
    (``low_closed``: ≤) and value < ``high`` (``high_closed``: ≤), a bound None being no bound. ``null``: what
    None stands for where a space file may give it (None: it may not). Both :class:`NormConfig` and the space
    files' option checks (:mod:`normsearch.space.checks`) use these, so each rule is written once."""

    choices: tuple[str, ...] = ()
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    low_closed: bool = False
    high_closed: bool = False
    null: str | None = None

    def problem(self, value: Any, *, none_ok: bool) -> str | None:
        """None if ``value`` is allowed (None only with ``none_ok``), else what is allowed, as text."""
        if value is None:
            return None if none_ok else self.text()
        if self.choices:
            ok = isinstance(value, str) and value in self.choices
        elif self.kind is bool:
            ok = isinstance(value, bool)
        else:
            number = int if self.kind is int else int | float
            ok = (
                isinstance(value, number)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            ok = ok and (
                self.low is None
                or (self.low <= value if self.low_closed else self.low < value)
            )
            ok = ok and (
                self.high is None
                or (value <= self.high if self.high_closed else value < self.high)
            )
        return None if ok else self.text()

    def text(self) -> str:
        """``one of a, b`` / ``true or false`` / ``a positive integer`` / ``a number in (0, 1]``, with ``or null
        (what it stands for)``."""
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is int:
            text = (
                "a positive integer"
                if (self.low, self.low_closed, self.high) == (1, True, None)
                else "an integer"
            )
        else:
            text = (
                f"a number in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}"
                f"{']' if self.high_closed else ')'}"
            )
        return text + (f" or null ({self.null})" if self.null else "")


def _option(default: Any, allowed: Allowed) -> Any:
    return field(default=default, metadata={"allowed": allowed})


@dataclass(frozen=True)
class NormConfig:
    """One point of the Π × Φ × Ψ design space.

    Π (partition):
        partition: ``batch`` per channel over (N, *S); ``layer`` per sample over (C, *S); ``instance`` per
            sample and channel over *S; ``group`` per sample over (C/G, *S); ``position`` per sample and
            position over C; ``batch_group`` per channel group over (N, C/G, *S); ``none`` no statistics.
        groups / group_size: the number G of contiguous channel groups, or C/G; exactly one of them for
            the grouped partitions, neither otherwise.
    Φ (statistics):
        center: subtract the mean μ of the partition.
        scale: divide by ``std`` = sqrt(σ² + eps) (biased σ²), ``rms`` = sqrt(E[x²] + eps), or ``none``.
        eps: added under the square root.
        running: keep running estimates (updated in train mode, used in eval mode); batch partitions only.
            ``False`` uses batch statistics in eval mode too.
        momentum: running = (1 - momentum) · running + momentum · batch estimate (torch's convention).
    Ψ (recovery):
        affine: per-channel γ and β (``full``), γ only (``gain``), or ``none``.
        act: nonlinearity fused into the layer: ``tlu`` max(y, τ) (FRN), ``evo_s0`` numerator gated by
            sigmoid(v·x), ``evo_b0`` denominator max(d, v·x + sqrt(instance σ² + eps)) (EvoNorm), ``dyt``
            tanh(α·x̃) before the affine, α a learnable scalar (Dynamic Tanh, Zhu et al. 2025), ``derf``
            erf(α·x̃ + s) before the affine, α and s learnable scalars, s init 0 (Dynamic erf, Chen et al.
            2025, arXiv 2512.10938).
        alpha_init: α's initial value for ``dyt`` / ``derf`` (default 0.5; DyT's LLaMA recipe sets it per
            site); only with those acts.
    Weight side:
        weight: reparametrization of the preceding conv: ``weight_norm`` or ``scaled_ws``.
    Layout:
        layout: ``channels`` for (N, C, *S) inputs, ``tokens`` for (N, *L, C) (see :data:`LAYOUTS`).

    Fields left ``None`` (running, momentum) resolve to their partition's default.
    """

    partition: str = _option("batch", Allowed(choices=PARTITIONS))
    groups: int | None = _option(None, Allowed(kind=int, low=1, low_closed=True))
    group_size: int | None = _option(None, Allowed(kind=int, low=1, low_closed=True))
    center: bool = _option(True, Allowed(kind=bool))
    scale: str = _option("std", Allowed(choices=SCALES))
    eps: float = _option(1e-5, Allowed(kind=float, low=0.0, high=1.0))
    running: bool | None = _option(
        None, Allowed(kind=bool, null="the partition's default")
    )
    momentum: float | None = _option(
        None,
        Allowed(kind=float, low=0.0, high=1.0, high_closed=True, null="the default"),
    )
    affine: str = _option("full", Allowed(choices=AFFINES))
    act: str = _option("none", Allowed(choices=ACTS))
    alpha_init: float | None = _option(
        None,
        Allowed(
            kind=float, low=0.0, high=100.0, null=f"{DEFAULT_ALPHA} for dyt and derf"
        ),
    )
    weight: str = _option("none", Allowed(choices=WEIGHTS))
    layout: str = _option("channels", Allowed(choices=LAYOUTS))

    def __post_init__(self) -> None:
        for f in fields(
            self
        ):  # each option on its own (None: not given, where the default is None)
            allowed = f.metadata["allowed"].problem(
                getattr(self, f.name), none_ok=f.default is None
            )
            if allowed is not None:
                raise ValueError(
                    f"option '{f.name}' must be {allowed}, got {getattr(self, f.name)!r}"
                )
        object.__setattr__(self, "eps", float(self.eps))
        self._check_groups()
        self._resolve_running()
        self._resolve_alpha()
        if self.partition == "none":
            if self.center or self.scale != "none":
                raise ValueError(
                    "partition=none computes no statistics: it needs center=false and scale=none"
                )
            if self.act in ("evo_s0", "evo_b0"):
                raise ValueError(
                    f"act={self.act} is built on partition statistics: it needs partition != none"
                )
        elif not self.center and self.scale == "none":
            raise ValueError(
                f"partition={self.partition} with center=false and scale=none normalizes nothing: "
                "use partition=none"
            )
        if self.act == "evo_b0" and self.scale == "none":
            raise ValueError(
                "act=evo_b0 takes the max with the partition's scale: it needs scale=std or rms"
            )

    def _check_groups(self) -> None:
        if self.partition in GROUPED_PARTITIONS:
            if (self.groups is None) == (self.group_size is None):
                raise ValueError(
                    f"partition={self.partition} needs exactly one of 'groups' or 'group_size'"
                )
        elif self.groups is not None or self.group_size is not None:
            raise ValueError(
                f"options 'groups'/'group_size' apply only to partition in {list(GROUPED_PARTITIONS)}, "
                f"not partition={self.partition}"
            )

    def _resolve_running(self) -> None:
        batchy = self.partition in BATCH_PARTITIONS
        running = batchy if self.running is None else self.running
        if running and not batchy:
            raise ValueError(
                f"option 'running' applies only to partition in {list(BATCH_PARTITIONS)}, "
                f"not partition={self.partition}"
            )
        momentum = self.momentum
        if momentum is None:
            momentum = 0.1 if running else None
        elif not running:
            raise ValueError(
                "option 'momentum' needs running=true (a batch partition with running estimates)"
            )
        object.__setattr__(self, "running", running)
        object.__setattr__(
            self, "momentum", None if momentum is None else float(momentum)
        )

    def _resolve_alpha(self) -> None:
        if self.act not in POINTWISE_ACTS:
            if self.alpha_init is not None:
                raise ValueError(
                    f"option 'alpha_init' applies only to act in {list(POINTWISE_ACTS)}, not act={self.act}"
                )
            return
        alpha = DEFAULT_ALPHA if self.alpha_init is None else float(self.alpha_init)
        object.__setattr__(self, "alpha_init", alpha)

    # ----------------------------------------------------------------------------------------------
    def num_groups(self, num_channels: int) -> int:
        """G for an input with ``num_channels`` channels (validates divisibility).

        ``batch`` and ``instance`` have one group per channel, ``layer`` and ``position`` a single one.
        """
        if (
            isinstance(num_channels, bool)
            or not isinstance(num_channels, int)
            or num_channels < 1
        ):
            raise ValueError(
                f"num_channels must be a positive integer, got {num_channels!r}"
            )
        if self.partition in ("batch", "instance"):
            return num_channels
        if self.partition not in GROUPED_PARTITIONS:
            return 1
        if self.groups is not None:
            if num_channels % self.groups:
                raise ValueError(
                    f"option 'groups'={self.groups} does not divide num_channels={num_channels}"
                )
            return self.groups
        if num_channels % self.group_size:
            raise ValueError(
                f"option 'group_size'={self.group_size} does not divide num_channels={num_channels}"
            )
        return num_channels // self.group_size

    @property
    def normalizes_activations(self) -> bool:
        """Whether the layer computes statistics of its input (False for purely weight-based schemes)."""
        return self.partition != "none"

    def replace(self, **changes: Any) -> NormConfig:
        """A validated copy with some options changed (``running``/``momentum`` re-resolved if omitted)."""
        return as_config(_overrides_applied(self._explicit(), changes, "replace()"))

    def _explicit(self) -> dict[str, Any]:
        """Options as given, with running/momentum left to resolve when they equal their defaults."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.running == (self.partition in BATCH_PARTITIONS):
            values["running"] = None
        if self.momentum == (0.1 if self.running else None):
            values["momentum"] = None
        if self.alpha_init == (DEFAULT_ALPHA if self.act in POINTWISE_ACTS else None):
            values["alpha_init"] = None
        return values

    def spec(self) -> str:
        """The shortest ``PRESET[:key=value,...]`` string that :func:`parse_spec` maps back to this config,
        among the presets with the same partition (so the string reads as a variant of a known layer).

        Falls back to the preset-less ``key=value,...`` form (overrides of the defaults), which always
        round-trips.
        """
        from .presets import PRESETS

        explicit = self._explicit()
        candidates = []
        for name, preset in PRESETS.items():
            base = as_config(preset.options)
            if (
                base.partition != self.partition
            ):  # "none:partition=group,..." would read as a contradiction
                continue
            diff = {
                k: v
                for k, v in explicit.items()
                if getattr(base, k) != getattr(self, k) and v is not None
            }
            if "groups" in diff or "group_size" in diff:
                diff.update(
                    {k: v for k, v in _group_kwargs(self).items() if v is not None}
                )
            candidates.append(
                name
                + (
                    ":" + ",".join(f"{k}={_format(v)}" for k, v in diff.items())
                    if diff
                    else ""
                )
            )
        valid = [text for text in candidates if _parses_to(text, self)]
        if valid:
            return min(valid, key=len)
        return ",".join(
            f"{k}={_format(v)}"
            for k, v in explicit.items()
            if v is not None and v != _DEFAULTS[k]
        )

    def __str__(self) -> str:
        return self.spec()


def _parses_to(text: str, cfg: NormConfig) -> bool:
    try:
        return parse_spec(text) == cfg
    except ValueError:
        return False


def _group_kwargs(cfg: NormConfig) -> dict[str, int | None]:
    return {"groups": cfg.groups, "group_size": cfg.group_size}


OPTION_NAMES = tuple(f.name for f in fields(NormConfig))
ALLOWED: dict[str, Allowed] = {
    f.name: f.metadata["allowed"] for f in fields(NormConfig)
}
"""Option name → what it may take (:class:`Allowed`)."""
_DEFAULTS = {f.name: f.default for f in fields(NormConfig)}
_INT_OPTIONS = tuple(name for name, allowed in ALLOWED.items() if allowed.kind is int)
_FLOAT_OPTIONS = tuple(
    name for name, allowed in ALLOWED.items() if allowed.kind is float
)
_BOOL_OPTIONS = tuple(name for name, allowed in ALLOWED.items() if allowed.kind is bool)


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _parse_value(name: str, text: str, spec: str) -> Any:
    """Turn one ``key=value`` string value into its typed option value."""
    lowered = text.strip().lower()
    if lowered == "none" and name in _INT_OPTIONS + _FLOAT_OPTIONS + ("running",):
        return None
    try:
        if name in _INT_OPTIONS:
            return int(lowered)
        if name in _FLOAT_OPTIONS:
            return float(lowered)
    except ValueError:
        kind = "an integer" if name in _INT_OPTIONS else "a number"
        raise ValueError(
            f"norm spec {spec!r}: option '{name}' must be {kind}, got {text!r}"
        ) from None
    if name in _BOOL_OPTIONS:
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(
            f"norm spec {spec!r}: option '{name}' must be true or false, got {text!r}"
        )
    return lowered


def _overrides_applied(
    base: Mapping[str, Any], overrides: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Merge overrides into base options; naming one of groups/group_size drops the other."""
    unknown = [k for k in overrides if k not in OPTION_NAMES]
    if unknown:
        raise ValueError(
            f"{where}: unknown option {unknown[0]!r}; allowed: {', '.join(OPTION_NAMES)}"
        )
    merged = dict(base)
    if "groups" in overrides and "group_size" not in overrides:
        merged["group_size"] = None
    if "group_size" in overrides and "groups" not in overrides:
        merged["groups"] = None
    if (
        "alpha_init" not in overrides
        and overrides.get("act", POINTWISE_ACTS[0]) not in POINTWISE_ACTS
    ):
        merged["alpha_init"] = None  # an act without α drops it
    if (
        "partition" in overrides
    ):  # running/momentum defaults and group options depend on the partition
        merged.update(running=None, momentum=None)
        if overrides["partition"] not in GROUPED_PARTITIONS:
            merged.update(groups=None, group_size=None)
    merged.update(overrides)
    return merged


def parse_spec(spec: str) -> NormConfig:
    """Parse ``PRESET[:key=value,...]`` or ``key=value,...`` into a validated :class:`NormConfig`."""
    from .presets import PRESETS

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"norm spec must be a non-empty string, got {spec!r}")
    text = spec.strip()
    head, sep, tail = text.partition(":")
    if "=" in head:
        name, options_text = None, text
    else:
        name, options_text = head.strip().lower(), tail if sep else ""
        if name not in PRESETS:
            raise ValueError(
                f"norm spec {spec!r}: unknown preset {name!r}; allowed: {', '.join(PRESETS)}"
            )
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in options_text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            raise ValueError(f"norm spec {spec!r}: expected key=value, got {item!r}")
        if key not in OPTION_NAMES:
            raise ValueError(
                f"norm spec {spec!r}: unknown option {key!r}; allowed: {', '.join(OPTION_NAMES)}"
            )
        if key in overrides:
            raise ValueError(f"norm spec {spec!r}: option {key!r} given twice")
        overrides[key] = _parse_value(key, value, spec)
    base = PRESETS[name].options if name else {}
    try:
        return NormConfig(**_overrides_applied(base, overrides, f"norm spec {spec!r}"))
    except ValueError as err:
        if str(err).startswith("norm spec"):
            raise
        raise ValueError(f"norm spec {spec!r}: {err}") from None


Spec = str | Mapping[str, Any] | NormConfig
"""What :func:`as_config` reads: a spec string, a mapping of options or a config."""


def as_config(spec: Spec) -> NormConfig:
    """Accept a spec string, a mapping of options (optionally with a ``preset`` key) or a config."""
    from .presets import PRESETS

    if isinstance(spec, NormConfig):
        return spec
    if isinstance(spec, str):
        return parse_spec(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        preset = options.pop("preset", None)
        if preset is not None and preset not in PRESETS:
            raise ValueError(
                f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}"
            )
        base = PRESETS[preset].options if preset else {}
        merged = _overrides_applied(base, options, "norm options")
        try:
            return NormConfig(**merged)
        except TypeError as err:  # pragma: no cover - guarded by _overrides_applied
            raise ValueError(str(err)) from None
    raise ValueError(
        f"a norm spec is a string, a mapping or a NormConfig, got {type(spec).__name__}"
    )


def config_dict(cfg: NormConfig) -> dict[str, Any]:
    """All options of a config as a plain dict (JSON-ready)."""
    return dataclasses.asdict(cfg)
