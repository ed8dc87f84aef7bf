"""Datasets: the offline default (scikit-learn's bundled 8×8 handwritten digits) and friends.

``digits_tensors(split)`` is the one source of the digits data for both the probes and the confirmation
training: 1797 real images, split once with a fixed permutation into 80 % train / 20 % validation.

``load_data(name, resolution=..., data_dir=..., download=...)`` gives the training view of every dataset
as an :class:`ImageData` (train and validation ``TensorDataset`` plus shape facts):

- ``digits``: the split above, bilinearly resized to ``resolution`` (native 8), float32 in [-1, 1];
- ``synthetic``: 10 seeded class prototypes (smooth random images) plus Gaussian noise; for fast tests;
- ``digits_hard``: the digits split above made hard enough that the normalizer matters (not saturated):
  each image seeded-warped, cluttered with a piece of another digit, coloured and noised at 16 px (RGB;
  see :func:`hard_digits`);
- ``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``: torchvision, official train/test split (test =
  validation), read from ``data_dir`` and downloaded there only with ``download=True``. Kept as uint8
  (N, C, H, W) to save memory; :meth:`ImageData.inputs` turns a batch into float in [-1, 1]
  (mean = std = 0.5, as the Beyond-BatchNorm code normalises) at ``resolution``;
- ``imagefolder:PATH``: torchvision's ``ImageFolder`` (one folder per class). ``PATH/train`` and ``PATH/val``
  (or ``PATH/test``) when both exist, else all of ``PATH`` split with a fixed seed into 80 % / 20 %. Standard
  transforms: shorter side resized to the resolution (``resolution``, or the first image's shorter side),
  then a centre crop; kept as uint8. 1 channel if the first image is grayscale, else RGB;
- ``text``, ``text:PATH``: byte corpora for language models (:mod:`normsearch.text`, a ``TextData``);
- ``FILE.py:FUNC`` or ``package.module:FUNC``: the user's ``FUNC() -> (train, val)`` torch datasets of
  (image (C, H, W) tensor or PIL image, integer label); read once into tensors (uint8 images are scaled to
  [-1, 1], float images are used as they are). Classes: ``len(train.classes)`` if the dataset has it, else
  the largest label + 1.

Channels, classes and the native resolution follow the data.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from .userfunc import IN_PROCESS, elsewhere, load_function, one_line

DIGITS_SPLIT_SEED = 0
DIGITS_VAL_FRACTION = 0.2
SYNTHETIC_SEED = 0
SYNTHETIC_SIZES = {"train": 1024, "val": 256}
SYNTHETIC_NOISE = 1.0
OFFLINE_DATASET = "digits"
HARD_DIGITS_SEED = 0
HARD_DIGITS_RESOLUTION = 16
HARD_DIGITS_NOISE = 0.1
"""Standard deviation of the additive pixel noise of ``digits_hard``, in [0, 1] intensity units."""
NATIVE_RESOLUTION = {
    "digits": 8,
    "digits_hard": HARD_DIGITS_RESOLUTION,
    "synthetic": 16,
    "cifar10": 32,
    "cifar100": 32,
    "mnist": 28,
    "fashionmnist": 28,
}
"""Each dataset's own image height = width (what ``resolution=None`` gives), known without loading it."""
FLIP_SYMMETRIC = ("cifar10", "cifar100")
"""Datasets whose classes survive a left-right mirror (the paper trains CIFAR with random flips); digits
and MNIST-style glyphs do not."""


class DatasetUnavailable(RuntimeError):
    """A dataset that is neither on disk nor downloadable; the message names the offline choice."""


@cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0 - 0.5) / 0.5  # pixels 0..16 → [-1, 1] (mean = std = 0.5)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    return images, bunch.target.astype(np.int64), order


def digits_tensors(split: str = "train") -> tuple[Tensor, Tensor]:
    """Digits as (images (n, 1, 8, 8) float32 in [-1, 1], labels (n,) int64) for ``train``, ``val`` or ``all``."""
    images, labels, order = _digits()
    n_val = round(len(order) * DIGITS_VAL_FRACTION)
    index = {"train": order[n_val:], "val": order[:n_val], "all": order}.get(split)
    if index is None:
        raise ValueError(f"digits split must be one of train, val, all; got {split!r}")
    return torch.from_numpy(images[index]).unsqueeze(1), torch.from_numpy(labels[index])


@dataclass(frozen=True)
class ImageData:
    """Train and validation sets of one dataset, as (images (n, C, H, W), labels (n,) int64) tensors.

    Images are float32 in [-1, 1] already at ``resolution``, or uint8 at the dataset's own size;
    :meth:`inputs` makes either the network input (B, C, resolution, resolution) float32 in [-1, 1].
    """

    task: ClassVar[str] = "classification"
    """The task this data defines (:mod:`normsearch.task`)."""

    name: str
    train: TensorDataset
    val: TensorDataset
    num_classes: int
    resolution: int

    @property
    def in_channels(self) -> int:
        return self.train.tensors[0].shape[1]

    def inputs(self, images: Tensor) -> Tensor:
        """A batch of stored images → float32 network input in [-1, 1] at ``resolution`` (same device)."""
        if images.dtype == torch.uint8:
            images = images.float().div_(127.5).sub_(1.0)
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = _resize(images, self.resolution)
        return images


def _resize(images: Tensor, resolution: int) -> Tensor:
    """Bilinear resize of (n, C, H, W) float images to (n, C, resolution, resolution)."""
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


Loaded = tuple[TensorDataset, TensorDataset, int, int]
"""(train, val, number of classes, native resolution)."""


def _load_digits(resolution: int | None, data_dir: str, download: bool) -> Loaded:
    native = NATIVE_RESOLUTION["digits"]
    size = resolution or native
    train, val = (digits_tensors(split) for split in ("train", "val"))
    resized = [TensorDataset(_resize(x, size) if size != native else x, y) for x, y in (train, val)]
    return resized[0], resized[1], 10, native


def _warp(images: Tensor, generator: torch.Generator, *, shift: float) -> Tensor:
    """Each of (n, 1, R, R) ``images`` through its own random affine map: rotation ±15°, scale 0.87–1.11,
    shear ±0.1, translation ±``shift`` (in units of half the image); zeros outside (bilinear)."""
    n = len(images)
    u = torch.rand(n, 5, generator=generator) * 2 - 1  # U(-1, 1)
    angle, scale, shear = u[:, 0] * math.pi / 12, 1 / (1.0 + 0.15 * u[:, 1]), 0.1 * u[:, 2]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, shift * u[:, 3]], 1),
            torch.stack([sin, cos + shear * sin, shift * u[:, 4]], 1),
        ],
        1,
    )  # (n, 2, 3): output pixel → input sampling position
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def hard_digits(
    images: Tensor, generator: torch.Generator, resolution: int = HARD_DIGITS_RESOLUTION
) -> Tensor:
    """Digits (n, 1, 8, 8) in [-1, 1] → hard RGB digits (n, 3, R, R) float32 in [-1, 1], from ``generator``:

    1. ink m = (x + 1) / 2 upsampled to R and warped (:func:`_warp`, shift ±0.1);
    2. clutter: another image of the same set (a random one), warped with shift ±0.9 so that mostly a
       piece of it shows near an edge, at 0.4 intensity: m ← max(m, 0.4·m');
    3. colour: background b ~ U(0, 1)³, foreground f = (b + U(0.4, 0.6)³) mod 1, so each channel's
       contrast is ≥ 0.4 with a random sign; pixel = b + (f − b)·m;
    4. noise: + :data:`HARD_DIGITS_NOISE` · N(0, 1), clamped to [0, 1], then scaled to [-1, 1].
    """
    n = len(images)
    ink = _resize((images + 1) / 2, resolution).clamp_(0, 1)
    ink = _warp(ink, generator, shift=0.1)
    other = torch.randint(0, n, (n,), generator=generator)
    clutter = _warp(_resize((images[other] + 1) / 2, resolution).clamp_(0, 1), generator, shift=0.9)
    ink = torch.maximum(ink, 0.4 * clutter)
    background = torch.rand(n, 3, 1, 1, generator=generator)
    foreground = (background + 0.4 + 0.2 * torch.rand(n, 3, 1, 1, generator=generator)) % 1.0
    pixels = background + (foreground - background) * ink
    noise = torch.randn(pixels.shape, generator=generator)
    return ((pixels + HARD_DIGITS_NOISE * noise).clamp_(0, 1) * 2 - 1).contiguous()


def _load_hard_digits(resolution: int | None, data_dir: str, download: bool) -> Loaded:
    """``digits_hard``: :func:`hard_digits` of the digits split (train and val from their own images), seeded
    by :data:`HARD_DIGITS_SEED`; resized bilinearly when ``resolution`` is not the native 16."""
    generator = torch.Generator().manual_seed(HARD_DIGITS_SEED)
    sets = []
    for split in ("train", "val"):
        images, labels = digits_tensors(split)
        hard = hard_digits(images, generator)
        if resolution and resolution != HARD_DIGITS_RESOLUTION:
            hard = _resize(hard, resolution)
        sets.append(TensorDataset(hard, labels))
    return sets[0], sets[1], 10, HARD_DIGITS_RESOLUTION


def _load_synthetic(resolution: int | None, data_dir: str, download: bool) -> Loaded:
    """Prototype p_k (4×4 Gaussian, bilinearly upsampled, so smooth) for class k; x = p_y + noise·N(0, 1)."""
    size = resolution or NATIVE_RESOLUTION["synthetic"]
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    prototypes = _resize(torch.randn(10, 1, 4, 4, generator=generator), size)
    sets = []
    for split in ("train", "val"):
        labels = torch.randint(0, 10, (SYNTHETIC_SIZES[split],), generator=generator)
        noise = torch.randn(len(labels), 1, size, size, generator=generator)
        images = (prototypes[labels] + SYNTHETIC_NOISE * noise).clamp_(-3.0, 3.0) / 3.0
        sets.append(TensorDataset(images, labels))
    return sets[0], sets[1], 10, NATIVE_RESOLUTION["synthetic"]


def _torchvision(cls_name: str, num_classes: int) -> Callable[[int | None, str, bool], Loaded]:
    def load(resolution: int | None, data_dir: str, download: bool) -> Loaded:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        splits = []
        for train in (True, False):
            dataset = cls(root=data_dir, train=train, download=download)
            images = torch.as_tensor(np.asarray(dataset.data))
            images = (
                images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
            )  # → (n, C, H, W)
            labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
            splits.append(TensorDataset(images.contiguous(), labels))
        return splits[0], splits[1], num_classes, splits[0].tensors[0].shape[-1]

    return load


LOADERS: dict[str, Callable[[int | None, str, bool], Loaded]] = {
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "digits_hard": _load_hard_digits,
    "cifar10": _torchvision("CIFAR10", 10),
    "cifar100": _torchvision("CIFAR100", 100),
    "mnist": _torchvision("MNIST", 10),
    "fashionmnist": _torchvision("FashionMNIST", 10),
}
"""Dataset name → loader(resolution or None, data_dir, download)."""


IMAGEFOLDER_SPLIT_SEED = 0
IMAGEFOLDER_VAL_FRACTION = 0.2


def _grayscale(mode: str) -> bool:
    return mode in ("1", "L", "I", "I;16", "F")


def _read_images(paths: list[str], resolution: int, mode: str) -> Tensor:
    """uint8 (n, C, R, R): each image converted to ``mode``, shorter side resized to R, centre-cropped."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    images = []
    for path in paths:
        with Image.open(path) as image:
            image = TF.center_crop(TF.resize(image.convert(mode), resolution), [resolution, resolution])
            images.append(TF.pil_to_tensor(image))
    return torch.stack(images)


def _image_folder(label: str, root: Path) -> tuple[list[str], list[int], list[str]]:
    from torchvision import datasets

    try:
        folder = datasets.ImageFolder(str(root), loader=lambda path: path)
    except (FileNotFoundError, OSError) as err:
        raise DatasetUnavailable(f"{label}: {' '.join(str(err).split())}") from None
    paths, labels = zip(*folder.samples, strict=True) if folder.samples else ((), ())
    return list(paths), list(labels), folder.classes


def _class_problem(classes: list[str]) -> str | None:
    """Why an image folder with these class folders cannot train a classifier (fewer than two), or None."""
    if len(classes) >= 2:
        return None
    held = f"one class folder ({classes[0]})" if classes else "no class folders"
    return f"holds {held}: a classifier needs at least 2, one folder of images per class"


def _load_image_folder(label: str, path: str, resolution: int | None) -> Loaded:
    """``imagefolder:PATH`` (see the module docstring)."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DatasetUnavailable(f"{label}: directory {root} does not exist")
    val_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        (train_paths, train_labels, classes), (val_paths, val_labels, val_classes) = (
            _image_folder(label, root / "train"),
            _image_folder(label, val_dir),
        )
        if val_classes != classes:
            raise DatasetUnavailable(f"{label}: {val_dir} has classes {val_classes}, train has {classes}")
    else:
        paths, labels, classes = _image_folder(label, root)
        order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(IMAGEFOLDER_SPLIT_SEED))
        n_val = max(1, round(len(paths) * IMAGEFOLDER_VAL_FRACTION))
        val_index, train_index = order[:n_val].tolist(), order[n_val:].tolist()
        train_paths, train_labels = [paths[i] for i in train_index], [labels[i] for i in train_index]
        val_paths, val_labels = [paths[i] for i in val_index], [labels[i] for i in val_index]
    problem = _class_problem(classes)
    if problem is not None:
        raise DatasetUnavailable(f"{label}: {problem}")
    if not train_paths or not val_paths:
        raise DatasetUnavailable(f"{label}: too few images for a train and a validation set")
    with Image.open(train_paths[0]) as first:
        mode = "L" if _grayscale(first.mode) else "RGB"
        native = min(first.size)
    size = resolution or native
    sets = [
        TensorDataset(_read_images(p, size, mode), torch.tensor(y, dtype=torch.int64))
        for p, y in ((train_paths, train_labels), (val_paths, val_labels))
    ]
    return sets[0], sets[1], len(classes), size


def _as_tensors(label: str, dataset: object) -> tuple[Tensor, Tensor]:
    from torchvision.transforms import functional as TF

    images, labels = [], []
    try:
        for image, target in dataset:
            images.append(image if isinstance(image, Tensor) else TF.pil_to_tensor(image))
            labels.append(int(target))
        stacked = torch.stack(images)
    except Exception as err:  # noqa: BLE001 - whatever the user's dataset raises is reported on one line
        raise DatasetUnavailable(f"{label}: reading the dataset failed: {one_line(err)}") from None
    if stacked.dim() != 4:
        raise DatasetUnavailable(f"{label}: images must be (C, H, W) tensors, got {tuple(stacked.shape[1:])}")
    if stacked.is_floating_point():
        stacked = stacked.float()
    return stacked, torch.tensor(labels, dtype=torch.int64)


def _load_user_data(label: str, where: str, function: str) -> Loaded:
    """``FILE.py:FUNC`` / ``module:FUNC`` returning (train, val) datasets."""
    fn = load_function(label, where, function, "FUNC() -> (train, val) datasets")
    try:
        train, val = fn()
    except Exception as err:  # noqa: BLE001
        raise DatasetUnavailable(
            f"{label}: {function}() did not return (train, val): {one_line(err)}"
        ) from None
    return _materialized(label, train, val)


def _materialized(label: str, train: object, val: object) -> Loaded:
    """(train, val) torch datasets read once into tensors; classes from ``train.classes`` or the labels."""
    (x_train, y_train), (x_val, y_val) = _as_tensors(label, train), _as_tensors(label, val)
    classes = getattr(train, "classes", None)
    num_classes = len(classes) if classes else int(max(y_train.max(), y_val.max())) + 1
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val), num_classes, x_train.shape[-1]


DATA_FORMS = f"{', '.join(LOADERS)}, text, text:PATH, imagefolder:PATH, FILE.py:FUNC or package.module:FUNC"


def check_data_name(name: str) -> None:
    """``ValueError`` with one line for a dataset name that cannot be used (without loading the data)."""
    if name in LOADERS or name in _REGISTERED or (isinstance(name, str) and name.startswith(IN_PROCESS)):
        return  # an in-process name is valid (stored records carry it); loading it elsewhere is refused
    from .text import check_text_name, is_text_name  # text corpora (normsearch.text)

    if is_text_name(name):
        check_text_name(name)
        return
    prefix, sep, rest = name.partition(":") if isinstance(name, str) else ("", "", "")
    if sep and prefix == "imagefolder":
        if not Path(rest).is_dir():
            raise ValueError(f"dataset {name!r}: directory {rest} does not exist")
        root = Path(rest) / "train" if (Path(rest) / "train").is_dir() else Path(rest)
        problem = _class_problem(sorted(d.name for d in root.iterdir() if d.is_dir()))
        if problem is not None:
            raise ValueError(f"dataset {name!r}: {root} {problem}")
        return
    where, sep, function = name.rpartition(":") if isinstance(name, str) else ("", "", "")
    if sep and where and function.isidentifier():
        load_function(f"dataset {name!r}", where, function, "FUNC() -> (train, val) datasets")
        return
    raise ValueError(f"unknown dataset {name!r}; allowed: {DATA_FORMS}")


_REGISTERED: dict[str, Callable[[int | None], Loaded]] = {}
"""In-process datasets (:func:`register_data`) by name."""


def register_data(train: object, val: object) -> str:
    """A dataset name for in-memory (train, val) torch datasets (Python API), known to this process only.

    The datasets are read into tensors now; the name carries a digest of their contents, so the same data
    gets the same name in a later process (a study made with it resumes) and other data another name."""
    loaded = _materialized("dataset (train, val)", train, val)
    digest = hashlib.sha256()
    for dataset in loaded[:2]:
        for tensor in dataset.tensors:
            digest.update(tensor.contiguous().numpy().tobytes())
    name = f"{IN_PROCESS}data-{digest.hexdigest()[:16]}"
    _REGISTERED[name] = lambda resolution: loaded
    return name


def in_process_only(name: str) -> bool:
    """Whether ``name`` is a :func:`register_data` dataset: other processes (search workers) cannot load it."""
    return name in _REGISTERED


def _user_loader(name: str) -> Callable[[int | None], Loaded] | None:
    """The loader of an ``imagefolder:``, user-function or registered dataset (None for the named ones)."""
    if name in LOADERS:
        return None
    if name in _REGISTERED:
        return _REGISTERED[name]
    if isinstance(name, str) and name.startswith(IN_PROCESS):
        raise DatasetUnavailable(elsewhere(f"dataset {name!r}", "FILE.py:FUNC returning (train, val)"))
    check_data_name(name)
    label = f"dataset {name!r}"
    prefix, _, rest = name.partition(":")
    if prefix == "imagefolder":
        return lambda resolution: _load_image_folder(label, rest, resolution)
    where, _, function = name.rpartition(":")
    return lambda resolution: _load_user_data(label, where, function)


@cache
def load_data(
    name: str, *, resolution: int | None = None, data_dir: str = "data", download: bool = False
) -> ImageData:
    """The dataset ``name`` (one of :data:`LOADERS`) at ``resolution`` (None: its native size).

    Raises :class:`DatasetUnavailable` when a torchvision dataset is not in ``data_dir`` and cannot be
    downloaded or a user dataset cannot be read (one line saying why), ``ValueError`` for an unknown name.
    Cached per argument tuple. ``text`` / ``text:PATH`` give a :class:`normsearch.text.TextData` instead.
    """
    from .text import TextUnavailable, is_text_name, load_text

    if is_text_name(name):
        try:
            return load_text(name)
        except TextUnavailable as err:
            raise DatasetUnavailable(str(err)) from None
    try:
        user = _user_loader(name)
    except ValueError as err:
        if name in LOADERS or ":" not in str(name):
            raise
        raise DatasetUnavailable(str(err)) from None
    if user is not None:
        train, val, num_classes, native = user(resolution)
        return ImageData(name, train, val, num_classes, resolution or native)
    try:
        train, val, num_classes, native = LOADERS[name](resolution, data_dir, download)
    except (RuntimeError, OSError) as err:
        where = Path(data_dir)
        reason = (
            f"could not be downloaded to {where}/ ({err})"
            if download
            else f"is not in {where}/ (download it there with --download, which needs internet)"
        )
        raise DatasetUnavailable(
            f"dataset {name!r} {reason}; the offline choice is dataset '{OFFLINE_DATASET}'"
        ) from None
    return ImageData(name, train, val, num_classes, resolution or native)
