"""What the search minimises and how it ranks: the objective values, the filters and the scalar score of a
probed config, from the four probe scores (:mod:`normsearch.probes.scores`).

Probe scores: a = activation_growth (fitted ln-variance growth per block), s = similarity, g = grad_ratio,
r = step_loss_ratio, on a network with B probed block outputs.

- **objectives** (:func:`objective_values`): the study minimises :data:`OBJECTIVES` = (s, r), the two probes
  that predicted trained accuracy (docs/confirm.md, "Evidence for the score"). Studies made with other
  objectives (:data:`OBJECTIVES_VERSION`) do not compare.
- **filters** (:func:`rejection`): a config that cannot train is *rejected*: NaN/inf or a collapse in any
  probe pass; the activation variance changing by more than ×B^:data:`GROWTH_POWER` (or ÷) across the B block
  outputs, |(B − 1)·a| > GROWTH_POWER · ln B; one SGD step that multiplies the loss by more than
  :data:`MAX_STEP_LOSS_RATIO`; an early-layer gradient more than 2^(B−1) times (or below 1/2^(B−1) of) the
  last one, |ln g| > (B − 1)·ln 2. All four are catastrophe filters: below their limits growth and the
  gradient ratio do not rank (they ranked trained accuracy weakly or backwards) and r ranks through the score.
  The limits come from benchmarks/regret.py's regimes (docs/confirm.md, "Evidence for the score"): layers
  that trained into the top third there (SWS and WN at ×4–60, DyT's ÷4, r up to 1.06) must pass.
- **score** (:meth:`ScoreWeights.score`, lower is better) orders the survivors:

    score = w_s · (−ln(1 − min(s, 1 − 1e-6)))  +  w_r · ln r  +  w_a · (B − 1) · |a|  +  w_g · |ln g|

  with default weights w_s = 1, w_r = 4, w_a = w_g = 0: growth and gradient ratio serve as filters, and the
  gradient ratio ranked backwards. Every term is in e-folds: −ln(1 − s) grows without bound as samples
  become indistinguishable (s = 0.9 → 2.3); ln r is the log change of the loss in one SGD step; (B − 1)·|a|
  is the fitted |ln(v_last / v_first)|; |ln g| the log blow-up, or decay, of the gradient from the last conv
  to the first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import SettingsError, check_fields

FOLDS = {"activation_growth": abs, "grad_ratio": lambda g: max(g, 1 / g) if g > 0 else math.inf}
"""The scores that are folded (:func:`folded`), and how."""


def folded(name: str, value: float) -> float:
    """Score ``name``'s ``value`` as a lower-is-better distance from its ideal (:mod:`normsearch.probes.scores`'s
    *folded*): |growth|, max(g, 1/g) (inf for g ≤ 0), the others unchanged."""
    fold = FOLDS.get(name)
    return fold(value) if fold is not None else value


OBJECTIVES = ("similarity", "step_loss_ratio")
"""The probe scores the study minimises, in order (see :func:`objective_values`)."""
OBJECTIVES_VERSION = 2
"""Stored with each study; version 1 minimised |activation_growth|, similarity, max(g, 1/g) with no filters."""
MAX_STEP_LOSS_RATIO = 1.25
"""Rejection limit of the one-step loss ratio (see docs/confirm.md, "Evidence for the score")."""
GROWTH_POWER = 3
"""Rejection limit of the activation variance change over B block outputs: ×B^GROWTH_POWER either way."""
SIMILARITY_CAP = 1 - 1e-6
RATIO_FLOOR = 1e-12
MAX_WEIGHT = 1e6
"""Largest weight of a probe score (weights are relative; larger ones overflow the score)."""


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the probe scores in the scalar score (the module docstring's w_s, w_r, w_a, w_g)."""

    similarity: float = field(
        default=1.0, metadata={"min": 0.0, "max": MAX_WEIGHT, "help": "weight of −ln(1 − similarity)"}
    )
    step_loss_ratio: float = field(
        default=4.0, metadata={"min": 0.0, "max": MAX_WEIGHT, "help": "weight of ln(step_loss_ratio)"}
    )
    activation_growth: float = field(
        default=0.0, metadata={"min": 0.0, "max": MAX_WEIGHT, "help": "weight of (B − 1)·|growth|"}
    )
    grad_ratio: float = field(
        default=0.0, metadata={"min": 0.0, "max": MAX_WEIGHT, "help": "weight of |ln(grad_ratio)|"}
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not any(dataclasses.astuple(self)):
            raise SettingsError("", "at least one weight must be > 0")

    def score(self, probe: Mapping[str, float], *, blocks: int) -> float:
        """The module docstring's score of probe scores ``probe`` (``activation_growth``, ``similarity``,
        ``grad_ratio``, ``step_loss_ratio`` as the probes report them) on ``blocks`` block outputs; lower is
        better. Ratios are floored at 1e-12 before the logarithm."""
        growth, similarity = float(probe["activation_growth"]), float(probe["similarity"])
        ratio, step = float(probe["grad_ratio"]), float(probe["step_loss_ratio"])
        return (
            -self.similarity * math.log1p(-min(similarity, SIMILARITY_CAP))
            + self.step_loss_ratio * math.log(max(step, RATIO_FLOOR))
            + self.activation_growth * max(blocks - 1, 1) * folded("activation_growth", growth)
            + self.grad_ratio * math.log(folded("grad_ratio", max(ratio, RATIO_FLOOR)))
        )


def objective_values(scores: Mapping[str, float]) -> list[float]:
    """What the study minimises, from probe scores: [similarity, step_loss_ratio] (both already finite
    and capped by the probes)."""
    return [float(scores[name]) for name in OBJECTIVES]


def rejection(record: Mapping[str, Any], *, lr: float) -> str | None:
    """Why a probed config cannot train (the module docstring's filters, first that applies), or None.

    ``record``: a trial's ``probe`` record (:class:`normsearch.records.ProbeRecord` as stored: the four scores,
    ``unstable``, ``reason``, ``blocks``); ``lr``: the learning rate of the step probe."""
    if record["unstable"]:
        return f"unstable at init: {record['reason']}"
    blocks = record["blocks"]
    total = (blocks - 1) * record["activation_growth"]
    if abs(total) > GROWTH_POWER * math.log(blocks):
        change = "explode" if total > 0 else "collapse"
        return (
            f"activations {change}: variance ×{math.exp(total):.3g} over {blocks} block outputs "
            f"(limit ×{blocks**GROWTH_POWER} either way: {blocks}^{GROWTH_POWER})"
        )
    step = record["step_loss_ratio"]
    if step > MAX_STEP_LOSS_RATIO:
        return (
            f"one SGD step at lr {lr:g} multiplies the loss by {step:.3g} (limit {MAX_STEP_LOSS_RATIO:g}): "
            "does not train at this learning rate"
        )
    ratio = record["grad_ratio"]
    if abs(math.log(max(ratio, 1e-300))) > (blocks - 1) * math.log(2):
        return (
            f"early-layer gradient ×{ratio:.3g} of the last conv's (limit 2^{blocks - 1} either way: "
            "doubling per block)"
        )
    return None


__all__ = [
    "FOLDS",
    "GROWTH_POWER",
    "MAX_STEP_LOSS_RATIO",
    "OBJECTIVES",
    "OBJECTIVES_VERSION",
    "ScoreWeights",
    "folded",
    "objective_values",
    "rejection",
]
