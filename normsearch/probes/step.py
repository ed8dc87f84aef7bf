"""The one-step loss probe: does the network's loss on the probe batch fall after one SGD step at the
training learning rate, or blow up?

On one batch (x, y), in train mode, with θ all trainable parameters and L(θ) the batch-mean cross-entropy:

    L₀ = L(θ),   θ' = θ − lr · ∇θ L(θ)   (plain SGD: no momentum, no weight decay),   L₁ = L(θ')
    step_loss_ratio = L₁ / L₀

L₀ and ∇θL come from the trace's forward and backward pass (:func:`~normsearch.probes.trace.trace_network`),
so the probe costs one more forward pass. The first step of SGD with momentum is this step (its buffer starts
at the gradient); weight decay at 1e-4 would move θ by lr·1e-4·θ, negligible here. A ratio below 1 means the
step helped; above 1, the step at this learning rate overshoots, which in the measurements behind this probe
(docs/confirm.md, "Evidence for the score") meant the network did not train at that learning rate. The
network's weights are changed: run it last, on a network that is thrown away afterwards. Non-finite values
propagate (the caller decides).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def loss_after_step(
    model: nn.Module, inputs: Tensor, targets: Tensor, grads: Sequence[Tensor | None], *, lr: float
) -> float:
    """L₁: the batch-mean cross-entropy on (inputs (N, C, H, W), targets (N,)) in train mode after the step
    θ ← θ − lr·g, with ``grads`` g = ∇θL₀ for each trainable parameter in ``model.parameters()`` order
    (:attr:`Trace.parameter_grads <normsearch.probes.trace.Trace>`; None: no step for that one). ``model``
    is updated in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(grads):
        raise ValueError(f"{len(grads)} gradients for {len(params)} trainable parameters")
    was_training = model.training
    try:
        model.train()
        with torch.no_grad():
            for param, grad in zip(params, grads, strict=True):
                if grad is not None:
                    param.add_(grad, alpha=-lr)
            return float(F.cross_entropy(model(inputs), targets))
    finally:
        model.train(was_training)


__all__ = ["loss_after_step"]
