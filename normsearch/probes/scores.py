"""The four scalar scores of one probe pass, and what "unstable" means. Ideal: growth 0, similarity low,
gradient ratio 1, step loss ratio low (below 1). How the search uses them: :mod:`normsearch.search`.

From a :class:`~normsearch.probes.trace.Trace` with block-output variances v_0..v_{B−1}, similarities
s_0..s_{B−1} and conv-output gradient norms g_0..g_{K−1} (depth order):

- **activation_growth** = least-squares slope of ln v_b over the block index b: the log-growth of the
  activation variance per block. Exponential growth v_b ∝ r^b scores ln r whatever the depth (≈ 0.69 for the
  doubling of an unnormalized ResNet); linear growth v_b ∝ 1 + b scores ≈ ln(B)/B, which goes to 0 with depth.
  The paper reports the curve only; this summary is ours.
- **similarity** = s_{B−1}, the mean off-diagonal cosine similarity at the last activation before pooling
  (the paper's Fig. 5 quantity). In [−1, 1]; ≥ 0 after a ReLU.
- **grad_ratio** = g_0 / g_k, the first conv's gradient norm over the last conv's with a non-zero gradient
  (the paper compares first and last layers; skipping exact zeros keeps the score defined under SkipInit,
  where every residual-branch conv has ∂L/∂z = 0 at init). Batch size cancels in the ratio. It measures
  blow-up towards the input; a gradient that vanishes towards the input scores below 1.
- **step_loss_ratio** = L₁ / L₀, the probe batch's loss after one plain SGD step at the training learning
  rate over the loss before (:mod:`.step`): below 1 the step helped, above 1 it overshot.

**Folded** (:func:`normsearch.score.folded`): each score as a lower-is-better distance from its ideal, the form the score and
the calibration rank: |activation_growth| (a collapse, growth < 0, is as far from 0 as an explosion) and
max(grad_ratio, 1/grad_ratio) (a vanishing gradient as far from 1 as a blow-up); similarity and
step_loss_ratio as they are.

**Language models** (the probe data's task is ``language_model``): one pass of
:func:`~normsearch.probes.transformer.probe_transformer` maps onto the same four scores, so the search's
objectives and filters read a transformer as they read a ResNet (:func:`transformer_scores`, the one place
of this mapping): the "blocks" are the transformer blocks and

- activation_growth = the slope of ln residual_variance (the residual stream's variance growth per block),
- similarity = token_similarity at the last block (token similarity within a sequence: rank collapse),
- grad_ratio = grad_norm of the first block's parameters / the last block's,
- step_loss_ratio = L₁ / L₀ after one step of the training optimizer (AdamW for the language model) at the
  training learning rate (the task's ``step_optimizer``, :data:`normsearch.task.LANGUAGE_MODEL`);

curves "variance", "similarity", "grad_norm" are those per block, and the record keeps the transformer's
own quantities as further per-block curves: "attention_entropy" (the minimum over heads, nats; its minimum
over blocks is the entropy-collapse probe), "massive_ratio" (max / median |activation| of the block output)
and "logit_scale" (RMS of the causal q·kᵀ/√d logits).

A pass is **unstable** when any value is NaN or ±inf, when the activations collapse to a constant
(variance 0 at some block output), when no gradient reaches any conv, or when the loss after the step is
not finite (then only step_loss_ratio takes its worst value: the init-time scores are still valid). Its scores are then the finite
worst values below, and curves get non-finite points replaced by ``CURVE_CAP`` (similarity: 1). Finite
scores are capped at the same worst values, so an unstable pass never scores better than a stable one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .trace import Trace
from .transformer import TransformerProbe

UNSTABLE_GROWTH = 100.0
"""Worst activation_growth: ln-variance per block (float32 spans ≈ 190 in ln, so ≥ 100 needs < 3 blocks)."""
UNSTABLE_SIMILARITY = 1.0
"""Worst similarity: all samples identical up to scale."""
UNSTABLE_GRAD_RATIO = 1e6
"""Worst grad_ratio: a first-layer gradient a million times the last layer's."""
UNSTABLE_STEP_LOSS_RATIO = 1e6
"""Worst step_loss_ratio: one step multiplied the loss a million times."""
CURVE_CAP = float(torch.finfo(torch.float32).max)
"""Replaces NaN / inf points of the variance and gradient curves."""


@dataclass(frozen=True)
class Scores:
    """The scores of one pass, its curves (finite, as lists) and why it is unstable (``None`` if stable)."""

    activation_growth: float
    similarity: float
    grad_ratio: float
    step_loss_ratio: float
    curves: dict[str, list[float]]
    reason: str | None


def log_growth_per_block(variance: Tensor) -> float:
    """Least-squares slope of ln(variance) against the block index (0 for fewer than 2 blocks)."""
    if variance.numel() < 2:
        return 0.0
    b = torch.arange(variance.numel(), dtype=torch.float64)
    y = variance.double().log()
    b = b - b.mean()
    return float((b * (y - y.mean())).sum() / b.square().sum())


def instability(trace: Trace) -> str | None:
    """Why a pass is unstable (``None`` when it is not): the first problem found, depth-indexed."""
    if not math.isfinite(trace.loss):
        return "non-finite loss"
    for name, curve, unit in (
        ("activation variance", trace.variance, "block"),
        ("sample similarity", trace.similarity, "block"),
        ("gradient norm", trace.grad_norm, "conv"),
    ):
        bad = (~torch.isfinite(curve)).nonzero()
        if bad.numel():
            return f"non-finite {name} at {unit} {int(bad[0])}"
    collapsed = (trace.variance == 0).nonzero()
    if collapsed.numel():
        return f"activations collapse to a constant at block {int(collapsed[0])}"
    if not bool((trace.grad_norm > 0).any()):
        return "no gradient reaches any conv"
    return None


def _finite_curve(curve: Tensor, fill: float) -> list[float]:
    return torch.nan_to_num(curve, nan=fill, posinf=fill, neginf=-fill).tolist()


def step_ratio(losses: tuple[float, float]) -> tuple[float, str | None]:
    """(step_loss_ratio, reason): L₁ / L₀ capped at ``UNSTABLE_STEP_LOSS_RATIO``, or the cap and why
    for a non-finite loss after the step (L₀ is the trace's loss, checked by :func:`instability`)."""
    before, after = losses
    if not math.isfinite(after):
        return UNSTABLE_STEP_LOSS_RATIO, "non-finite loss after one SGD step"
    return min(after / before if before > 0 else 1.0, UNSTABLE_STEP_LOSS_RATIO), None


def score(trace: Trace, losses: tuple[float, float]) -> Scores:
    """The four scores of one pass (see the module docstring): ``losses`` = (L₀, L₁), the trace's loss and
    :func:`~normsearch.probes.step.loss_after_step` on the same network and batch."""
    curves = {
        "variance": _finite_curve(trace.variance, CURVE_CAP),
        "similarity": _finite_curve(trace.similarity, UNSTABLE_SIMILARITY),
        "grad_norm": _finite_curve(trace.grad_norm, CURVE_CAP),
    }
    reason = instability(trace)
    if reason is not None:
        worst = (UNSTABLE_GROWTH, UNSTABLE_SIMILARITY, UNSTABLE_GRAD_RATIO, UNSTABLE_STEP_LOSS_RATIO)
        return Scores(*worst, curves, reason)
    ratio_after_step, reason = step_ratio(losses)
    nonzero = (trace.grad_norm > 0).nonzero()
    ratio = float(trace.grad_norm[0] / trace.grad_norm[int(nonzero[-1])])
    return Scores(
        activation_growth=min(log_growth_per_block(trace.variance), UNSTABLE_GROWTH),
        similarity=min(max(float(trace.similarity[-1]), -1.0), UNSTABLE_SIMILARITY),
        grad_ratio=min(ratio, UNSTABLE_GRAD_RATIO),
        step_loss_ratio=ratio_after_step,
        curves=curves,
        reason=reason,
    )


LM_CURVES = ("attention_entropy", "massive_ratio", "logit_scale")
"""The transformer quantities a language model's record keeps beside the four scores' curves."""


def transformer_scores(probe: TransformerProbe) -> Scores:
    """The four scores of one language-model pass (the module docstring's mapping), with the extra
    :data:`LM_CURVES` (non-finite points replaced by ``CURVE_CAP``)."""
    trace = Trace(
        variance=torch.tensor(probe.residual_variance, dtype=torch.float64),
        similarity=torch.tensor(probe.token_similarity, dtype=torch.float64),
        grad_norm=torch.tensor(probe.grad_norm, dtype=torch.float64),
        loss=probe.loss,
    )
    passed = score(trace, (probe.loss, probe.loss * probe.step_loss_ratio))
    extra = {
        "attention_entropy": torch.tensor([min(heads) for heads in probe.attention_entropy]),
        "massive_ratio": torch.tensor(probe.massive_ratio),
        "logit_scale": torch.tensor(probe.logit_scale),
    }
    curves = {**passed.curves, **{k: _finite_curve(v.double(), CURVE_CAP) for k, v in extra.items()}}
    return dataclasses.replace(passed, curves=curves)


__all__ = [
    "CURVE_CAP",
    "LM_CURVES",
    "UNSTABLE_GRAD_RATIO",
    "UNSTABLE_GROWTH",
    "UNSTABLE_SIMILARITY",
    "UNSTABLE_STEP_LOSS_RATIO",
    "Scores",
    "instability",
    "log_growth_per_block",
    "score",
    "step_ratio",
    "transformer_scores",
]
