"""One training run: records, reproducibility, step cap, divergence, schedules, progress."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normsearch.confirm.settings import ConfirmSettings
from normsearch.data import load_data
from normsearch.models import build_model
from normsearch.train import TrainProgress, augmentation, fit, flip_batch, lr_factor, train

FAST = {"depth": 8, "width": 8, "epochs": 2, "batch_size": 64, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_digits_run_records():
    settings = ConfirmSettings(dataset="digits", **FAST)
    result = train("bn", settings, seed=0)
    per_epoch = len(load_data("digits").train.tensors[1]) // 64
    assert result.steps == 2 * per_epoch
    assert len(result.train_loss) == len(result.val_accuracy) == 2
    assert all(0.0 <= a <= 1.0 for a in result.val_accuracy)
    assert all(math.isfinite(x) for x in result.train_loss)
    assert result.train_loss[1] < result.train_loss[0]
    assert result.accuracy == max(result.val_accuracy) and result.final_accuracy == result.val_accuracy[-1]
    assert result.accuracy > 0.5 and not result.diverged  # digits are learnt fast (chance: 0.1)
    assert result.images_per_s > 0 and result.seconds > 0
    record = result.to_dict()
    assert record["spec"] == "bn" and record["accuracy"] == result.accuracy and record["device"] == "cpu"


def test_synthetic_is_learnt_and_seed_reproduces():
    settings = ConfirmSettings(dataset="synthetic", resolution=8, **FAST)
    first = train("gn:groups=4", settings, seed=3)
    again = train("gn:groups=4", settings, seed=3)
    other = train("gn:groups=4", settings, seed=4)
    assert first.val_accuracy == again.val_accuracy and first.train_loss == again.train_loss
    assert other.train_loss != first.train_loss
    assert first.accuracy > 0.3  # chance is 0.1


def test_flip_batch_mirrors_a_seeded_half_of_the_images():
    images = (torch.arange(64 * 3 * 4 * 5) % 251).to(torch.uint8).reshape(64, 3, 4, 5)  # as CIFAR is stored
    out = flip_batch(images, torch.Generator().manual_seed(0))
    mirrored = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, images, strict=True)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each image exactly one of the two
    assert 16 <= sum(mirrored) <= 48
    assert torch.equal(out, flip_batch(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, flip_batch(images, torch.Generator().manual_seed(1)))


def test_augment_auto_flips_cifar_only_and_flips_change_training():
    assert augmentation("auto", "cifar10") == augmentation("auto", "cifar100") == "flip"
    assert augmentation("auto", "digits") == augmentation("auto", "mnist") == "none"
    assert augmentation("flip", "digits") == "flip" and augmentation("none", "cifar10") == "none"
    plain = ConfirmSettings(dataset="synthetic", resolution=8, **FAST)
    flipped = ConfirmSettings(dataset="synthetic", resolution=8, augment="flip", **FAST)
    auto = ConfirmSettings(dataset="synthetic", resolution=8, augment="auto", **FAST)
    assert train("bn", auto, seed=0).train_loss == train("bn", plain, seed=0).train_loss  # auto: none here
    first, again = train("bn", flipped, seed=0), train("bn", flipped, seed=0)
    assert first.train_loss == again.train_loss  # the flips are seeded
    assert first.train_loss != train("bn", plain, seed=0).train_loss


def test_steps_cap_batch_override_and_cnn():
    settings = ConfirmSettings(dataset="synthetic", resolution=8, model="cnn", steps=5, **FAST)
    result = train("ln", settings, seed=0, batch_size=16)
    assert result.steps == 5 and result.batch_size == 16 and len(result.val_accuracy) == 1


def test_absurd_learning_rate_diverges_and_stops_early():
    settings = ConfirmSettings(dataset="synthetic", resolution=8, lr=1e8, **{**FAST, "epochs": 3})
    result = train("none", settings, seed=0)
    per_epoch = 1024 // 64
    assert result.diverged
    assert result.steps < 3 * per_epoch
    assert len(result.val_accuracy) < 3 and result.accuracy == max(result.val_accuracy, default=0.0)


def test_progress_reports_every_step():
    seen: list[TrainProgress] = []
    settings = ConfirmSettings(dataset="synthetic", resolution=8, steps=20, **FAST)
    train("bn", settings, seed=0, progress=seen.append)
    assert [p.step for p in seen] == list(range(1, 21)) and {p.total_steps for p in seen} == {20}
    assert seen[0].val_accuracy is None and seen[-1].epoch == 2 and seen[-1].val_accuracy is not None


def test_fit_trains_any_module():
    data = load_data("synthetic", resolution=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = fit(model, data, ConfirmSettings(optimizer="adam", lr=1e-2, **FAST), seed=0)
    assert result.accuracy > 0.3 and result.spec == ""


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("constant", [1.0, 1.0, 1.0]), ("cosine", [1.0, 0.5, 0.0]), ("step", [1.0, 1.0, 0.1])],
)
def test_schedules(schedule, expected):
    total, warmup = 12, 2
    assert [lr_factor(0, total, warmup, schedule), lr_factor(1, total, warmup, schedule)] == [0.5, 1.0]
    got = [lr_factor(t, total, warmup, schedule) for t in (warmup, warmup + 5, total)]
    assert got == pytest.approx(expected, abs=1e-12)


def test_threads_apply_during_the_run_only():
    seen: list[int] = []
    before = torch.get_num_threads()
    settings = ConfirmSettings(dataset="synthetic", resolution=8, steps=2, threads=2, **FAST)
    train("bn", settings, seed=0, progress=lambda event: seen.append(torch.get_num_threads()))
    assert seen == [2, 2] and torch.get_num_threads() == before == 1  # the fixture's count is back


@pytest.mark.slow
def test_compiled_training_matches_eager():
    """compile: true trains through torch.compile (dynamo captures the network) to the eager run's losses,
    accuracies, weights and running statistics, up to float rounding; the generic path with running
    statistics (evonorm_b0) is the case that exercises the layer's autograd Functions and buffer updates."""
    data = load_data("digits")
    runs = {}
    for compile_ in (False, True):
        settings = ConfirmSettings(
            dataset="digits", model="cnn", steps=12, compile=compile_, **{**FAST, "depth": 3}
        )
        torch.manual_seed(0)
        model = build_model("cnn", "evonorm_b0", depth=3, width=8, num_classes=10, in_channels=1)
        torch._dynamo.utils.counters.clear()
        runs[compile_] = (fit(model, data, settings, seed=0), model.state_dict())
        captured = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert captured >= 1 if compile_ else captured == 0
    (eager, eager_state), (fast, fast_state) = runs[False], runs[True]
    assert fast.steps == eager.steps == 12 and not fast.diverged
    assert fast.train_loss == pytest.approx(eager.train_loss, rel=1e-5)
    assert fast.val_accuracy == pytest.approx(eager.val_accuracy, abs=2 / 359)  # at most 2 images flip
    for name, tensor in eager_state.items():
        torch.testing.assert_close(fast_state[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
