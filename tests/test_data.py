"""Datasets: digits split and resizing, the synthetic set, torchvision's missing-data message."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from normsearch.data import (
    DIGITS_VAL_FRACTION,
    LOADERS,
    DatasetUnavailable,
    ImageData,
    digits_tensors,
    load_data,
)


def test_digits_split_is_fixed_and_disjoint():
    train_x, _ = digits_tensors("train")
    val_x, _ = digits_tensors("val")
    all_x, _ = digits_tensors("all")
    n_val = round(len(all_x) * DIGITS_VAL_FRACTION)
    assert len(all_x) == 1797  # scikit-learn's bundled digits
    assert train_x.shape == (1797 - n_val, 1, 8, 8) and val_x.shape == (n_val, 1, 8, 8)
    assert train_x.min() >= -1 and train_x.max() <= 1
    assert torch.equal(digits_tensors("train")[0], train_x)
    train_rows = {tuple(x.flatten().tolist()) for x in train_x}
    assert sum(tuple(x.flatten().tolist()) in train_rows for x in val_x) < 5  # only true duplicate images
    with pytest.raises(ValueError, match="train, val, all"):
        digits_tensors("test")


def test_digits_native_and_upsampled():
    native = load_data("digits")
    assert native.resolution == 8 and native.in_channels == 1 and native.num_classes == 10
    assert torch.equal(native.train.tensors[0], digits_tensors("train")[0])
    big = load_data("digits", resolution=16)
    images, labels = big.train.tensors
    assert images.shape == (len(labels), 1, 16, 16) and torch.equal(labels, digits_tensors("train")[1])
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(big.inputs(images[:4]), images[:4])  # stored at the target size already


def test_synthetic_is_seeded_and_learnable():
    first, second = LOADERS["synthetic"](12, "data", False), LOADERS["synthetic"](12, "data", False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            first[0].tensors + first[1].tensors, second[0].tensors + second[1].tensors, strict=True
        )
    )
    data = load_data("synthetic", resolution=12)
    (x, y), (vx, vy) = data.train.tensors, data.val.tensors
    assert x.shape == (1024, 1, 12, 12) and vx.shape == (256, 1, 12, 12)
    means = torch.stack([x[y == k].mean(0) for k in range(10)]).flatten(1)
    nearest = torch.cdist(vx.flatten(1), means).argmin(1)
    assert (nearest == vy).float().mean() > 0.5  # a nearest-class-mean classifier beats chance (0.1) by far


def test_hard_digits_is_seeded_balanced_and_keeps_the_digits_labels():
    first, second = LOADERS["digits_hard"](None, "data", False), LOADERS["digits_hard"](None, "data", False)
    for a, b in zip(first[:2], second[:2], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors, strict=True))
    data = load_data("digits_hard")
    assert data.resolution == 16 and data.in_channels == 3 and data.num_classes == 10
    for split, (images, labels) in (("train", data.train.tensors), ("val", data.val.tensors)):
        assert images.shape == (len(labels), 3, 16, 16) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        assert torch.equal(labels, digits_tensors(split)[1])  # each image is its source digit, warped
        counts = labels.bincount(minlength=10)
        assert counts.min() >= 0.75 * counts.float().mean()  # balanced as the digits split: each class ≈ n/10
    # not the plain digits: a nearest-class-mean classifier, which reads 8 px digits well, is far worse here
    (x, y), (vx, vy) = data.train.tensors, data.val.tensors
    plain = load_data("digits", resolution=16)
    means = torch.stack([x[y == k].mean(0) for k in range(10)]).flatten(1)
    hard_accuracy = (torch.cdist(vx.flatten(1), means).argmin(1) == vy).float().mean()
    (px, py), (pvx, pvy) = plain.train.tensors, plain.val.tensors
    plain_means = torch.stack([px[py == k].mean(0) for k in range(10)]).flatten(1)
    plain_accuracy = (torch.cdist(pvx.flatten(1), plain_means).argmin(1) == pvy).float().mean()
    assert plain_accuracy > 0.85 and hard_accuracy < 0.4
    small = load_data("digits_hard", resolution=8)
    assert small.train.tensors[0].shape[1:] == (3, 8, 8)


def test_inputs_converts_uint8_and_resizes():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 4, 4).contiguous()
    data = ImageData(
        "fake", TensorDataset(images, torch.zeros(2)), TensorDataset(images, torch.zeros(2)), 10, 8
    )
    out = data.inputs(images)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8) and data.in_channels == 3
    assert torch.allclose(out[0], torch.full((3, 8, 8), -1.0)) and torch.allclose(out[1], torch.ones(3, 8, 8))


@pytest.mark.parametrize("name", ["cifar10", "fashionmnist"])
def test_missing_dataset_names_the_offline_choice(tmp_path, name):
    with pytest.raises(DatasetUnavailable) as info:
        load_data(name, data_dir=str(tmp_path))
    message = str(info.value)
    assert name in message and str(tmp_path) in message and "--download" in message and "'digits'" in message
    assert "\n" not in message


def test_unknown_dataset():
    with pytest.raises(ValueError, match="allowed: digits, synthetic"):
        load_data("imagenet")
