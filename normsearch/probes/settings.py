"""Probe settings: which network, batch and seeds the init-time probes run on."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data import check_data_name
from ..settings import check_fields
from ..sources import FORMS, check_model_name


def probe_reads(name: str) -> bool:
    """Whether the probes read dataset ``name`` on their own: digits, and the named-by-path or in-memory
    sources (``imagefolder:PATH``, ``FILE.py:FUNC``, ``python:…``); not the torchvision sets, whose
    ``data_dir`` only the confirmation settings know."""
    return name == "digits" or ":" in name


def check_probe_data(name: str) -> None:
    """``gaussian`` or any dataset name of :mod:`normsearch.data` (``ValueError`` otherwise)."""
    if name != "gaussian":
        check_data_name(name)


@dataclass(frozen=True)
class ProbeSettings:
    """Settings of one probe run (validated on construction; see :mod:`normsearch.settings`)."""

    model: str = field(
        default="resnet",
        metadata={"check": check_model_name, "help": f"probe network: {FORMS} (normsearch.sources)"},
    )
    depth: int = field(default=20, metadata={"min": 2, "help": "ResNet depth (6n+2) or CNN conv layers"})
    width: int = field(default=32, metadata={"min": 1, "help": "channels of the first stage"})
    batch_size: int = field(default=64, metadata={"min": 2, "help": "samples in the probe batch"})
    seeds: int = field(default=3, metadata={"min": 1, "help": "independent inits/batches, reported as mean ± std"})
    seed: int = field(default=0, metadata={"min": 0, "help": "base seed: fixes inputs and init"})
    data: str = field(
        default="digits",
        metadata={"check": check_probe_data, "help": "probe inputs: gaussian (seeded noise) or a dataset (normsearch.data)"},
    )
    resolution: int = field(
        default=16, metadata={"min": 4, "help": "input height = width (the cnn halves it 4 times: >= 32 keeps 2x2)"}
    )
    skipinit: bool = field(default=False, metadata={"help": "ResNet residual scale s init 0 (SkipInit)"})
    lr: float = field(
        default=0.1, metadata={"min": 0.0, "help": "learning rate of the one-step loss probe (the training's)"}
    )

    def __post_init__(self) -> None:
        check_fields(self)
