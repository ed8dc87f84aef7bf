"""Init-time probes of "Beyond BatchNorm" (Lubana et al. 2021): activation growth, sample similarity and
gradient blow-up of a randomly initialised network, scored in about a second per config.

    runner = ProbeRunner(ProbeSettings(depth=20, width=32))
    result = runner.run("gn:groups=8")        # ProbeResult; probe(spec, settings) does the same once

Modules: :mod:`.settings` (what to probe on), :mod:`.inputs` (seeded batches), :mod:`.trace` (hooks and raw
curves), :mod:`.scores` (scalar scores and instability), :mod:`.runner` (seeds, mean ± std).
"""

from .runner import ProbeResult, ProbeRunner, probe
from .scores import UNSTABLE_GRAD_RATIO, UNSTABLE_GROWTH, UNSTABLE_SIMILARITY
from .settings import ProbeSettings
from .trace import Trace, trace_network

__all__ = [
    "UNSTABLE_GRAD_RATIO",
    "UNSTABLE_GROWTH",
    "UNSTABLE_SIMILARITY",
    "ProbeResult",
    "ProbeRunner",
    "ProbeSettings",
    "Trace",
    "probe",
    "trace_network",
]
