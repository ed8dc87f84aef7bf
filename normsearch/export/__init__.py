"""Export a config as standalone PyTorch code: one file, one ``nn.Module`` class, only torch needed.

``export_source("gn:groups=8")`` returns the source of a ``GroupNorm8`` class that computes exactly what
``build_norm("gn:groups=8", C)`` does (same kernel, outputs, gradients, running estimates and state-dict
keys), with the formula, config string and provenance in its docstring; weight-based schemes get the conv
wrapper too. The CLI is ``normsearch export`` (:mod:`normsearch.cli.export`).
"""

from .names import check_class_name, default_class_name
from .provenance import Provenance
from .source import export_source

__all__ = ["Provenance", "check_class_name", "default_class_name", "export_source"]
