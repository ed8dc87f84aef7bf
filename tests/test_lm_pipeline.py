"""The language-model task through the pipeline: probes on gpt read the text task (seeded byte windows, the
LM loss, one AdamW step) and fill the probe record the search reads; confirmation and the leaderboard rank
by val_loss (bits per byte, lower is better); the shipped ``transformer`` space loads. Tiny sizes, seed 0."""

from __future__ import annotations

import math

import pytest

from normsearch.probes import ProbeRunner, ProbeSettings
from normsearch.records import ProbeRecord
from normsearch.score import rejection

pytestmark = pytest.mark.usefixtures("one_thread")

LM_PROBE = ProbeSettings(model="gpt", data="text", depth=2, width=16, batch_size=4, seeds=1, lr=0.002)


def test_gpt_probe_record_is_finite_and_carries_the_transformer_quantities():
    result = ProbeRunner(LM_PROBE).run("pn|context=16,heads=2")
    record = ProbeRecord.of(result).attr()
    assert not record["unstable"], record["reason"]
    assert record["blocks"] == 2
    for name in ("activation_growth", "similarity", "grad_ratio", "step_loss_ratio"):
        assert math.isfinite(record[name]), name
    # one AdamW step at the training lr lowers a Pre-LN LayerNorm gpt's loss on its own batch
    assert 0.5 < record["step_loss_ratio"] < 1.0
    curves = record["curves"]
    for name in ("variance", "similarity", "grad_norm", "attention_entropy", "massive_ratio", "logit_scale"):
        assert len(curves[name]) == 2 and all(math.isfinite(v) for v in curves[name]), name
    # attention over ≤ 16 causal keys: entropy in (0, ln 16]
    assert 0 < min(curves["attention_entropy"]) <= math.log(16)
    assert min(curves["massive_ratio"]) > 1
    assert rejection(record, lr=LM_PROBE.lr) is None
