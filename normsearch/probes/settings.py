"""Probe settings: which network, batch and seeds the init-time probes run on."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH, default_resolution, min_resolution, network_problem
from ..settings import SettingsError, check_fields

MAX_BATCH = 4096
MAX_SEEDS = 100
from ..data import check_data_name
from ..sources import BUILTIN, FORMS, check_model_name


def probe_reads(name: str) -> bool:
    """Whether the probes read dataset ``name`` on their own: digits, and the named-by-path or in-memory
    sources (``imagefolder:PATH``, ``FILE.py:FUNC``, ``python:…``); not the torchvision sets, whose
    ``data_dir`` only the confirmation settings know; and the text corpora ``text`` / ``text:PATH``."""
    return name == "digits" or name == "text" or ":" in name


def check_probe_data(name: str) -> None:
    """``gaussian`` or any dataset name of :mod:`normsearch.data` (``ValueError`` otherwise)."""
    if name != "gaussian":
        check_data_name(name)


@dataclass(frozen=True)
class ProbeSettings:
    """Settings of one probe run (validated on construction; see :mod:`normsearch.settings`).

    ``resolution`` None (the default) becomes the model's :func:`~normsearch.models.default_resolution`
    (resnet 16, cnn 32: the CNN halves its input 4 times, and at 16 px its last maps are 1×1).
    """

    model: str = field(
        default="resnet",
        metadata={"check": check_model_name, "help": f"probe network: {FORMS} (normsearch.sources)"},
    )
    depth: int = field(
        default=20, metadata={"min": 2, "max": MAX_DEPTH, "help": "ResNet depth (6n+2) or CNN conv layers"}
    )
    width: int = field(
        default=32, metadata={"min": 1, "max": MAX_WIDTH, "help": "channels of the first stage"}
    )
    batch_size: int = field(
        default=64, metadata={"min": 2, "max": MAX_BATCH, "help": "samples in the probe batch"}
    )
    seeds: int = field(
        default=3,
        metadata={"min": 1, "max": MAX_SEEDS, "help": "independent inits/batches, reported as mean ± std"},
    )
    seed: int = field(default=0, metadata={"min": 0, "help": "base seed: fixes inputs and init"})
    data: str = field(
        default="digits",
        metadata={
            "check": check_probe_data,
            "help": "probe inputs: gaussian (seeded noise) or a dataset (normsearch.data)",
        },
    )
    resolution: int | None = field(
        default=None,
        metadata={
            "min": 4,
            "max": MAX_RESOLUTION,
            "help": "input height = width; default: the model's (resnet 16, cnn 32: its last maps stay 2×2)",
        },
    )
    skipinit: bool = field(default=False, metadata={"help": "ResNet residual scale s init 0 (SkipInit)"})
    lr: float = field(
        default=0.1,
        metadata={"min": 0.0, "help": "learning rate of the one-step loss probe (the training's)"},
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.resolution is None:
            object.__setattr__(self, "resolution", default_resolution(self.model, self.depth))
        problem = network_problem(
            self.model,
            depth=self.depth,
            width=self.width,
            resolution=self.resolution,
            batch_size=self.batch_size,
        )
        if problem is not None:
            raise SettingsError(*problem)

    def resolution_note(self) -> str | None:
        """A warning when a paper network's last maps are 1×1 (instance-style layers collapse there), else None
        (other networks' map sizes are not known before they are built)."""
        if self.model not in BUILTIN:
            return None
        least = min_resolution(self.model, self.depth)
        if self.resolution >= least:
            return None
        return (
            f"resolution {self.resolution}: {self.model}-{self.depth} ends on 1×1 maps, where instance-style "
            f"layers collapse (similarity 1, no gradient); use at least {least}"
        )
