"""The byte-level language model, its text data, the language-model task and the transformer probes: the
known orderings at small scale (seeded, tiny), each with its settings in the test."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
import torch
from torch import nn

from normsearch.confirm.settings import ConfirmSettings
from normsearch.data import DatasetUnavailable, check_data_name, load_data
from normsearch.gpt import GPT, build_gpt
from normsearch.models import build_model
from normsearch.norm import UnifiedNorm
from normsearch.probes.transformer import probe_transformer, text_batch
from normsearch.task import LANGUAGE_MODEL, LM_TRAINING, bits_per_byte, task_of
from normsearch.text import SIZE_CAP, load_text
from normsearch.train import fit, train

WIDTH, HEADS, CONTEXT = 32, 2, 32


@pytest.fixture(scope="module")
def corpus():
    return load_text("text")


@pytest.fixture(scope="module")
def batch(corpus):
    return text_batch(corpus, 8, CONTEXT, seed=0)


def tiny(spec: str = "pn", *, depth: int = 4, seed: int = 0, width: int = WIDTH, **options) -> GPT:
    torch.manual_seed(seed)
    return build_gpt(spec, depth=depth, width=width, heads=HEADS, context=CONTEXT, **options)


# ---------------------------------------------------------------------------------------------------
# The network


@pytest.mark.parametrize(
    ("placement", "qk_norm", "final_norm", "depth_scaling"),
    list(itertools.product(("pre", "post", "peri", "mix"), (False, True), (False, True), (False, True))),
)
def test_gpt_builds_with_every_option_and_its_norm_slots_are_the_candidates_layer(
    placement, qk_norm, final_norm, depth_scaling
):
    depth = 4
    model = tiny(
        "pn:center=false,scale=rms,affine=gain",
        depth=depth,
        placement=placement,
        qk_norm=qk_norm,
        final_norm=final_norm,
        depth_scaling=depth_scaling,
    )
    per_block = {"pre": 2, "post": 2, "peri": 4, "mix": 2}[placement]
    expected = depth * per_block + 2 * depth * qk_norm + final_norm
    slots = [m for m in model.modules() if isinstance(m, UnifiedNorm)]
    assert len(slots) == expected == len(model.norm_slots())
    assert all(s.config.layout == "tokens" and s.kernel == "last_dim_rms_norm" for s in slots)
    assert not any(isinstance(m, nn.LayerNorm | nn.RMSNorm) for m in model.modules())
    placements = [b.placement for b in model.blocks]
    assert placements == (["post", "pre", "pre", "pre"] if placement == "mix" else [placement] * depth)
    assert [b.scale for b in model.blocks] == (
        [1 / math.sqrt(layer) for layer in range(1, depth + 1)] if depth_scaling else [1.0] * depth
    )
    tokens = torch.randint(0, 256, (2, CONTEXT))
    logits = model(tokens)
    assert logits.shape == (2, CONTEXT, 256) and torch.isfinite(logits).all()


@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
def test_gpt_is_causal_and_its_explicit_attention_equals_sdpa(placement):
    model = tiny("derf", placement=placement, qk_norm=True).eval()
    tokens = torch.randint(0, 256, (2, CONTEXT), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 256
    fast = model(tokens)
    torch.testing.assert_close(fast[:, :20], model(changed)[:, :20])
    for attention in model.attention_modules():
        attention.explicit = True
    torch.testing.assert_close(model(tokens), fast, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("ln", {}, "gpt needs causal norms: partition=layer averages over positions"),
        ("bn", {}, "gpt needs causal norms: partition=batch"),
        ("sws", {}, "gpt has no convs for weight=scaled_ws"),
        (
            "pn",
            {"placement": "sandwich"},
            "network option placement of gpt must be one of pre, post, peri, mix",
        ),
        ("pn", {"qk_norm": 1}, "network option qk_norm of gpt must be true or false"),
        ("pn", {"heads": 3}, "gpt option 'heads'=3 does not divide width=32"),
    ],
)
def test_bad_gpt_options_name_the_option(spec, options, message):
    with pytest.raises(ValueError, match=message):
        build_model("gpt", spec, depth=2, width=WIDTH, num_classes=256, network=options)


def test_network_options_go_to_gpt_only():
    assert build_model(
        "gpt", "pn", depth=2, width=WIDTH, num_classes=256, network={"placement": "post"}
    ).blocks[0].placement == ("post")
    with pytest.raises(ValueError, match="network option placement: unknown network option of resnet"):
        build_model("resnet", "bn", depth=8, width=8, network={"placement": "post"})


# ---------------------------------------------------------------------------------------------------
# Text data and the task


def test_stdlib_text_is_split_by_file_deterministically_and_capped(corpus):
    assert set(corpus.train_files).isdisjoint(corpus.val_files)
    assert len(corpus.train) + len(corpus.val) <= SIZE_CAP
    assert 0.08 < len(corpus.val) / SIZE_CAP < 0.3
    load_text.cache_clear()
    again = load_text("text")
    assert again.train_files == corpus.train_files and torch.equal(again.train, corpus.train)
    assert corpus.train.dtype == torch.uint8 and task_of(corpus) is LANGUAGE_MODEL
    assert load_data("text") is again


def test_user_text_folder_is_split_by_file_and_bad_paths_are_one_line(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
        for i in range(5):
            (folder / f"part{i}.txt").write_text(f"file {i} " * 200)
    data = load_data(f"text:{good}")
    assert set(data.train_files).isdisjoint(data.val_files)
    assert sorted(data.train_files + data.val_files) == [f"part{i}.txt" for i in range(5)]
    assert len(data.train) + len(data.val) == 5 * len("file 0 " * 200)
    (bad / "empty.txt").write_bytes(b"")
    with pytest.raises(DatasetUnavailable, match=r"empty\.txt is empty$"):
        load_data(f"text:{bad}")
    (bad / "binary.txt").write_bytes(b"ab\0cd")
    with pytest.raises(
        DatasetUnavailable, match=r"binary\.txt is binary \(a NUL byte at offset 2\), not text$"
    ):
        load_data(f"text:{bad}/binary.txt")
    with pytest.raises(ValueError, match="does not exist"):
        check_data_name(f"text:{tmp_path}/missing")


def test_bits_per_byte_is_the_nat_loss_over_ln_2():
    logits = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 256, (3, 5), generator=torch.Generator().manual_seed(1))
    nats = float(torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)))
    assert float(LANGUAGE_MODEL.loss(logits, targets)) == pytest.approx(nats)
    assert bits_per_byte(nats) == pytest.approx(nats / math.log(2))
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0)


def test_a_tiny_lm_run_goes_below_the_unigram_entropy(corpus):
    """Pre-LN LayerNorm, depth 2, width 32, context 32, batch 16, AdamW lr 0.003, 120 steps, seed 0: the
    validation loss falls below the unigram entropy of the training bytes (4.67 bits/byte) by more than the
    collapse margin, and an untrained model is at ≈ 8 bits/byte."""
    settings = ConfirmSettings(
        **{**LM_TRAINING, "depth": 2, "width": WIDTH, "steps": 120, "lr": 0.003, "warmup_epochs": 0.0}
    )
    untrained = LANGUAGE_MODEL.evaluate(tiny(depth=2), corpus, torch.device("cpu"), context=CONTEXT)
    assert 7.5 < untrained < 8.5
    result = fit(tiny(depth=2), corpus, settings, seed=0)
    assert result.metric == "val_loss" and not result.higher_is_better and result.steps == 120
    assert result.value == result.best_val_loss == min(result.val_loss) < corpus.unigram_bits() - 0.25
    assert not result.collapsed and not result.diverged and result.accuracy == 0.0


# ---------------------------------------------------------------------------------------------------
# Transformer probes: known orderings


def test_pre_ln_residual_variance_grows_with_depth_and_depth_scaling_tames_it(batch):
    """Pre-LN LayerNorm, GPT-2 init, width 32, 2 heads, depth 8, seeds 0-2, 8 windows of 32 bytes: the
    residual stream's variance rises block by block (slope of its log > 0 for every seed), and LayerNorm
    scaling (× 1/√ℓ) lowers that slope for every seed."""
    for seed in range(3):
        plain = probe_transformer(tiny(depth=8, seed=seed), *batch, lr=0.006)
        scaled = probe_transformer(tiny(depth=8, seed=seed, depth_scaling=True), *batch, lr=0.006)
        assert plain.variance_growth > 0 and plain.residual_variance[-1] > plain.residual_variance[0]
        assert scaled.variance_growth < plain.variance_growth


def test_post_ln_early_gradients_shrink_relative_to_late_ones_as_depth_grows(batch):
    """Init N(0, 1/C) (Xiong et al.'s scale), width 16, 2 heads, seeds 0-3, 8 windows of 32 bytes: the
    first/last block parameter-gradient-norm ratio, median over seeds, falls from depth 2 to depth 12 for
    Post-LN (measured 1.43 → 0.37) and rises for Pre-LN (1.88 → 2.62)."""

    def ratio(placement: str, depth: int) -> float:
        return statistics.median(
            probe_transformer(
                tiny(depth=depth, seed=seed, width=16, placement=placement, init_std=16**-0.5),
                *batch,
                lr=0.006,
            ).grad_ratio
            for seed in range(4)
        )

    assert ratio("post", 12) < 0.5 * ratio("post", 2)
    assert ratio("pre", 12) > ratio("pre", 2)


def test_dyt_with_alpha_too_large_saturates(batch):
    """Pre-norm DyT, depth 2, seed 0: at α = 0.5 no slot input reaches tanh's flat tail; at α = 50 some do,
    more at α = 90."""
    share = [
        probe_transformer(tiny(f"dyt:alpha_init={a}", depth=2), *batch, lr=0.006).saturation
        for a in (0.5, 50.0, 90.0)
    ]
    assert share[0] == 0.0 < share[1] < share[2]
    assert probe_transformer(tiny("pn", depth=2), *batch, lr=0.006).saturation is None


def test_probe_reads_attention_and_the_one_step_loss(batch):
    probe = probe_transformer(tiny(depth=2, qk_norm=True), *batch, lr=0.006)
    assert len(probe.attention_entropy) == 2 and all(len(h) == HEADS for h in probe.attention_entropy)
    # causal attention over L keys: mean entropy below the uniform one over the whole context
    assert 0 < probe.min_attention_entropy < math.log(CONTEXT)
    assert all(s > 0 for s in probe.logit_scale) and len(probe.branch_variance) == 2
    assert 0 < probe.step_loss_ratio < 1  # AdamW's first step at lr 0.006 lowers the loss
    assert probe.loss == pytest.approx(math.log(256), abs=0.05)


def test_train_builds_gpt_on_text_from_the_confirmation_settings():
    """``train(spec, settings)`` as confirmation calls it: model gpt, dataset text (LM_TRAINING), 3 steps."""
    settings = ConfirmSettings(**{**LM_TRAINING, "depth": 2, "width": 16, "steps": 3})
    result = train("pn", settings, seed=0)
    assert (result.task, result.metric, result.steps, len(result.val_loss)) == (
        "language_model",
        "val_loss",
        3,
        1,
    )
    assert result.to_dict()["value"] == result.val_loss[0] and result.val_accuracy == []
    assert result.collapsed  # 3 steps learn nothing beyond the unigram statistics
