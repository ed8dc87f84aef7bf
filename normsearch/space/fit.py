"""Fitting the space to the probe network: each listed ``groups`` / ``group_size`` value must divide every
channel count of the network's normalization slots."""

from __future__ import annotations

from ..probes.settings import ProbeSettings
from ..sources import network_label
from .model import SearchSpace
from .problems import Problems


def probe_channels(settings: ProbeSettings) -> tuple[int, ...]:
    """Channel counts of the probe network's normalization slots (ValueError for impossible settings); built
    with ``pn``, which every network takes (a language model refuses batch statistics), for the probe data's
    channels and classes."""
    from ..models import build_model
    from ..norm import UnifiedNorm
    from ..probes.inputs import data_shape

    in_channels, num_classes = data_shape(settings)
    model = build_model(
        settings.model,
        "pn",
        depth=settings.depth,
        width=settings.width,
        num_classes=num_classes,
        in_channels=in_channels,
        skipinit=settings.skipinit,
        resolution=settings.resolution,
    )
    return tuple(sorted({m.num_channels for m in model.modules() if isinstance(m, UnifiedNorm)}))


def fits(value: int, channels: tuple[int, ...]) -> bool:
    """Whether a groups (G) or group_size (C/G) value divides every channel count C."""
    return all(c % value == 0 for c in channels)


def check_fits(space: SearchSpace, problems: Problems, network_from: str) -> None:
    """Every listed groups / group_size value must divide every channel count of the probe network;
    a network that cannot be built is reported under ``network_from`` (the section that defined it).

    Ranges are not checked value by value: their non-divisors fail as trials.
    """
    try:
        channels = probe_channels(space.probe)
    except ValueError as err:
        problems.add(network_from, str(err).split(": ", 1)[-1])
        return
    for param in space.params:
        if param.option not in ("groups", "group_size") or param.kind not in ("fixed", "categorical"):
            continue
        allowed = [v for v in param.choices if fits(v, channels)]
        network = network_label(space.probe.model, space.probe.depth, space.probe.width)
        for i, value in enumerate(param.choices):
            if not fits(value, channels):
                where = f"{param.path}.choices[{i}]" if param.kind == "categorical" else param.path
                problems.add(
                    where,
                    f"{value} does not fit the probe network's channel counts "
                    f"{', '.join(map(str, channels))} ({network}); fitting values here: "
                    f"{', '.join(map(str, allowed)) or 'none'}",
                )


__all__ = ["check_fits", "fits", "probe_channels"]
