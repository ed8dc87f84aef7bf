"""Data sources: imagefolder:PATH on PNGs the test writes, the user's FUNC() -> (train, val), their errors,
and probes and training on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm.settings import ConfirmSettings
from normsearch.data import DatasetUnavailable, check_data_name, load_data
from normsearch.probes import ProbeRunner, ProbeSettings
from normsearch.settings import SettingsError
from normsearch.train import train


def write_pngs(
    root: Path, classes: tuple[str, ...], per_class: int, size: int, mode: str, seed: int = 0
) -> None:
    """``per_class`` random PNGs of ``size`` px per class folder; class k is brighter by 60 · k."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, channels)) + 60 * k
            image = Image.fromarray(
                pixels.astype(np.uint8).squeeze(-1) if channels == 1 else pixels.astype(np.uint8)
            )
            image.save(root / name / f"{i}.png")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pngs"
    write_pngs(root, ("a", "b", "c"), per_class=10, size=12, mode="RGB")
    return root


def test_imagefolder_split_classes_channels_resolution(folder: Path) -> None:
    data = load_data(f"imagefolder:{folder}")
    assert (data.num_classes, data.in_channels, data.resolution) == (3, 3, 12)
    x_train, y_train = data.train.tensors
    x_val, y_val = data.val.tensors
    assert (len(y_train), len(y_val)) == (24, 6) and x_train.dtype == torch.uint8
    assert set(y_train.tolist()) | set(y_val.tolist()) == {0, 1, 2}
    expected = np.array(Image.open(folder / "a" / "0.png")).transpose(2, 0, 1)  # pixels kept exactly
    all_images = torch.cat([x_train, x_val])
    assert any(torch.equal(img, torch.from_numpy(expected.copy())) for img in all_images)
    batch = data.inputs(x_train[:4])
    assert batch.shape == (4, 3, 12, 12) and batch.min() >= -1 and batch.max() <= 1
    load_data.cache_clear()
    again = load_data(f"imagefolder:{folder}")  # the seeded split is the same every time
    assert torch.equal(again.val.tensors[1], y_val) and torch.equal(again.val.tensors[0], x_val)


def test_imagefolder_train_val_folders_grayscale_and_resize(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", ("x", "y"), per_class=4, size=16, mode="L")
    write_pngs(tmp_path / "val", ("x", "y"), per_class=2, size=16, mode="L", seed=1)
    data = load_data(f"imagefolder:{tmp_path}", resolution=8)
    assert (data.num_classes, data.in_channels, data.resolution) == (2, 1, 8)
    assert data.train.tensors[0].shape == (8, 1, 8, 8) and data.val.tensors[0].shape == (4, 1, 8, 8)
    assert data.val.tensors[1].tolist() == [0, 0, 1, 1]


def test_user_function_dataset(tmp_path: Path) -> None:
    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n\n\n"
        "def load():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.randn(40, 2, 6, 6, generator=g), torch.arange(40) % 4\n"
        "    return TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])\n"
    )
    data = load_data(f"{tmp_path / 'my_data.py'}:load")
    assert (data.num_classes, data.in_channels, data.resolution) == (4, 2, 6)
    assert data.train.tensors[0].dtype == torch.float32 and len(data.val) == 8


def test_dataset_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown dataset 'imagenet'; allowed: digits, synthetic.*imagefolder:PATH"
    ):
        check_data_name("imagenet")
    with pytest.raises(ValueError, match=r"directory .*nowhere does not exist"):
        check_data_name(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetUnavailable,
        match=r"^dataset 'imagefolder:.*empty': .*empty holds no class folders: a classifier needs at least 2",
    ):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "bad.py").write_text("def load():\n    return 1\n")
    with pytest.raises(DatasetUnavailable, match=r"load\(\) did not return \(train, val\): TypeError"):
        load_data(f"{tmp_path / 'bad.py'}:load")
    with pytest.raises(SettingsError, match="^dataset: unknown dataset 'imagenet'"):
        ConfirmSettings(dataset="imagenet")
    result = CliRunner().invoke(app, ["probe", "bn", "--data", f"imagefolder:{tmp_path / 'empty'}"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data: dataset 'imagefolder:"), result.output
    assert "holds no class folders" in lines[0]


def test_probe_and_train_follow_the_folder(folder: Path) -> None:
    name = f"imagefolder:{folder}"
    runner = ProbeRunner(ProbeSettings(data=name, depth=8, width=8, batch_size=8, seeds=1, resolution=12))
    inputs, targets = runner.batch(0)
    assert inputs.shape == (8, 3, 12, 12) and int(targets.max()) <= 2
    assert runner.network("bn", 0).head.out_features == 3
    assert not runner.run("bn").unstable
    settings = ConfirmSettings(dataset=name, depth=8, width=8, epochs=2, batch_size=8, lr=0.05, device="cpu")
    result = train("bn", settings, seed=0)
    assert result.steps == 6 and len(result.val_accuracy) == 2
    assert result.accuracy > 1 / 3  # the classes differ in brightness: learnable in a few steps
