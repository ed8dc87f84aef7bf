"""normsearch/score.py's filters on the cases that issue 20 measured as false rejections, and their limits."""

from __future__ import annotations

import math

from normsearch.score import GROWTH_POWER, MAX_STEP_LOSS_RATIO, rejection


def _probe(*, change: float = 1.5, step: float = 0.9, grad: float = 2.0, blocks: int = 4) -> dict:
    """A probe record whose activation variance changes ×``change`` over ``blocks`` block outputs."""
    return {
        "activation_growth": math.log(change) / (blocks - 1),
        "similarity": 0.5,
        "grad_ratio": grad,
        "step_loss_ratio": step,
        "blocks": blocks,
        "unstable": False,
        "reason": None,
    }


def test_layers_that_trained_into_the_top_third_pass_the_filters() -> None:
    # ResNet-8 (4 block outputs): SWS at 98.5 % (3rd of 13) and WN grew ×4.4, DyT's variance fell ÷4.x, and the
    # best-trained config of a groups study had a one-step loss ratio of 1.06: each was rejected before.
    assert rejection(_probe(change=4.4), lr=0.1) is None
    assert rejection(_probe(change=1 / 4.5), lr=0.1) is None
    assert rejection(_probe(step=1.06), lr=0.1) is None


def test_catastrophes_are_still_rejected_with_the_limit_named() -> None:
    assert GROWTH_POWER == 3 and MAX_STEP_LOSS_RATIO == 1.25
    assert rejection(_probe(change=70.0), lr=0.1) == (
        "activations explode: variance ×70 over 4 block outputs (limit ×64 either way: 4^3)"
    )
    assert rejection(_probe(change=1 / 70), lr=0.1).startswith("activations collapse: variance ×0.0143")
    assert rejection(_probe(change=60.0), lr=0.1) is None
    assert rejection(_probe(step=2.1), lr=0.1).startswith("one SGD step at lr 0.1 multiplies the loss by 2.1")
    assert rejection(_probe(grad=9.0), lr=0.1).startswith(
        "early-layer gradient ×9 of the last conv's (limit 2^3"
    )
