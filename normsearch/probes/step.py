"""The one-step loss probe: does the network's loss on the probe batch fall after one SGD step at the
training learning rate, or blow up?

On one batch (x, y), in train mode, with θ all trainable parameters and L(θ) the batch-mean cross-entropy:

    L₀ = L(θ),   θ' = θ − lr · ∇θ L(θ)   (plain SGD: no momentum, no weight decay),   L₁ = L(θ')
    step_loss_ratio = L₁ / L₀

The first step of SGD with momentum is this step (its buffer starts at the gradient); weight decay at
1e-4 moves θ by lr·1e-4·θ, negligible here. A ratio below 1 means the step helped; above 1, the step at
this learning rate overshoots, which in the measurements behind this probe (docs/confirm.md, "Evidence
for the score") meant the network did not train at that learning rate. Cost: one forward and one
backward to the parameters, one forward after the step. The network's weights are changed: run it last,
on a network that is thrown away afterwards. Non-finite values propagate (the caller decides).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def one_step_losses(model: nn.Module, inputs: Tensor, targets: Tensor, *, lr: float) -> tuple[float, float]:
    """(L₀, L₁): the batch-mean cross-entropy before and after one plain SGD step of size ``lr`` on
    (inputs (N, C, H, W), targets (N,)); see the module docstring. ``model`` is updated in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    try:
        model.train()
        with torch.enable_grad():
            before = F.cross_entropy(model(inputs), targets)
            grads = torch.autograd.grad(before, params, allow_unused=True)
        with torch.no_grad():
            for param, grad in zip(params, grads, strict=True):
                if grad is not None:
                    param.add_(grad, alpha=-lr)
            after = F.cross_entropy(model(inputs), targets)
    finally:
        model.train(was_training)
    return float(before.detach()), float(after)


__all__ = ["one_step_losses"]
