"""Init-time probes of "Beyond BatchNorm" (Lubana et al. 2021): activation growth, sample similarity and
gradient blow-up of a randomly initialised network, plus this package's one-step loss ratio at the training
learning rate, scored in well under a second per config.

    runner = ProbeRunner(ProbeSettings(depth=20, width=32))
    result = runner.run("gn:groups=8")        # ProbeResult; probe(spec, settings) does the same once

Modules: :mod:`.settings` (what to probe on), :mod:`.inputs` (seeded batches), :mod:`.trace` (hooks and raw
curves), :mod:`.step` (loss before and after one SGD step), :mod:`.scores` (scalar scores and instability),
:mod:`.runner` (seeds, mean ± std).

Fidelity to the paper's code. The curves are its definitions: per-channel unbiased variance over (N, H, W)
averaged over channels, uncentred mean off-diagonal cosine similarity of flattened samples, ‖∂L/∂z‖_F at
every conv output before the norm, with L the batch-mean cross-entropy, on one train-mode batch before
any step. Where this package differs:

- curves are read at the block outputs (ResNet: stem and post-sum activations; the paper also probes the
  activation inside each block) and the similarity uses the O(N·D) normalized-sum identity instead of the
  N×N Gram matrix (equal up to rounding; an all-zero sample counts as orthogonal, where the paper's code
  divides by zero). The Gram-based "stable rank" is not computed.
- the three scalar summaries are this package's (see :mod:`.scores`); the paper plots curves.
- defaults are smaller than the paper's (batch 64 of 16 px digits, ResNet-20 of width 32, 3 seeds; no flip
  augmentation). The paper's setting is ``ProbeSettings(depth=56, width=32, batch_size=256,
  resolution=32)`` for the ResNet and ``ProbeSettings(model="cnn", depth=10, width=64, batch_size=256,
  resolution=32)`` for its CNN (``data="digits"`` stands in for CIFAR). In a search space, probe settings
  not given follow the confirmation network instead (:func:`normsearch.space.matched_probe`).
- ``step_loss_ratio`` is not in the paper (:mod:`.step`).

A runner is not thread-safe (it seeds torch's global RNG around each network build).
"""

from .runner import SCORES, ProbeResult, ProbeRunner, probe
from .scores import UNSTABLE_GRAD_RATIO, UNSTABLE_GROWTH, UNSTABLE_SIMILARITY, UNSTABLE_STEP_LOSS_RATIO
from .settings import ProbeSettings
from .trace import Trace, trace_network

__all__ = [
    "SCORES",
    "UNSTABLE_GRAD_RATIO",
    "UNSTABLE_GROWTH",
    "UNSTABLE_SIMILARITY",
    "UNSTABLE_STEP_LOSS_RATIO",
    "ProbeResult",
    "ProbeRunner",
    "ProbeSettings",
    "Trace",
    "probe",
    "trace_network",
]
