"""Byte-level text corpora for the language-model task, offline: nothing is downloaded.

- ``text``: the bytes of the Python standard library's own source files (``*.py`` under
  ``sysconfig.get_paths()["stdlib"]``, ``site-packages`` / ``dist-packages`` left out), so every machine with
  the same Python has the same corpus. The files, sorted by relative path, are put in a seeded order
  (:data:`SPLIT_SEED`); the first ones go to validation until it holds :data:`VAL_FRACTION` of
  :data:`SIZE_CAP` bytes, the next ones to training until it holds the rest (the last one cut at the cap).
  The split is **by file**: no file contributes to both.
- ``text:PATH``: a user's text file or folder of text files (every regular, non-hidden file below it,
  sorted). A folder of two or more files is split by file as above; a single file by position (its last
  :data:`VAL_FRACTION` of bytes validate). The same :data:`SIZE_CAP` applies. A missing path, an empty file
  or a binary one (a NUL byte) raises :class:`TextUnavailable` with one line naming it.

Each split is a flat uint8 tensor of bytes (vocabulary 256). :meth:`TextData.windows` cuts it into
(inputs, targets) pairs of ``context`` bytes, targets shifted by one byte: the next-byte prediction task.
"""

from __future__ import annotations

import math
import os
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor


class TextUnavailable(RuntimeError):
    """A corpus that cannot be read (one line naming the path); :func:`normsearch.data.load_data` raises it as
    its ``DatasetUnavailable``."""


SIZE_CAP = 4 * 2**20
"""Bytes of a corpus, train and validation together (4 MiB: 2.9 bits/byte is reached in 800 steps)."""
VAL_FRACTION = 0.1
"""Share of :data:`SIZE_CAP` (or of a single file) that validates."""
SPLIT_SEED = 0
"""Seed of the file order that decides the split."""
VOCAB = 256
"""Byte values."""
STDLIB_NAME = "text"
PREFIX = "text:"


@dataclass(frozen=True)
class TextData:
    """Train and validation bytes of one corpus: ``train`` (n,) and ``val`` (m,) uint8, and which files
    went where (``train_files`` / ``val_files``, paths relative to the corpus root, in split order).
    ``task`` names the task this data defines (:mod:`normsearch.task`)."""

    task: ClassVar[str] = "language_model"
    num_classes: ClassVar[int] = VOCAB
    in_channels: ClassVar[int] = 1
    resolution: ClassVar[None] = None

    name: str
    train: Tensor
    val: Tensor
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]

    def unigram_bits(self) -> float:
        """Entropy of the training bytes' frequencies, −Σ p log₂ p (bits per byte): what a model that
        learned only how often each byte occurs scores."""
        counts = torch.bincount(self.train.long(), minlength=VOCAB).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log2()).sum())

    def windows(self, split: str, context: int) -> int:
        """How many (context + 1)-byte windows fit in ``split`` (``train`` or ``val``) without overlap;
        ``ValueError`` when not even one does."""
        data = self.train if split == "train" else self.val
        count = (len(data) - 1) // context
        if count < 1:
            raise ValueError(
                f"dataset {self.name!r}: the {split} split has {len(data)} bytes, fewer than the "
                f"context of {context} + 1"
            )
        return count

    def batch(self, starts: Tensor, split: str, context: int) -> tuple[Tensor, Tensor]:
        """(inputs, targets) int64 (B, context) of the windows starting at ``starts`` (B,):
        targets[b, t] = the byte after inputs[b, t]."""
        data = self.train if split == "train" else self.val
        index = starts.view(-1, 1) + torch.arange(context + 1).view(1, -1)
        rows = data[index].long()
        return rows[:, :-1], rows[:, 1:]


def stdlib_root() -> Path:
    """The standard library's directory of the running Python."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    """Every ``*.py`` below ``root`` outside ``site-packages`` / ``dist-packages`` / ``__pycache__`` (not
    walked into), sorted by relative path."""
    skip = {"site-packages", "dist-packages", "__pycache__"}
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        found += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _user_files(label: str, root: Path) -> list[Path]:
    if not root.exists():
        raise TextUnavailable(f"{label}: {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise TextUnavailable(f"{label}: {root} holds no files")
    return files


def _read(label: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TextUnavailable(f"{label}: {path} cannot be read: {err.strerror or err}") from None
    if not data:
        raise TextUnavailable(f"{label}: {path} is empty")
    nul = data.find(b"\0")
    if nul >= 0:
        raise TextUnavailable(f"{label}: {path} is binary (a NUL byte at offset {nul}), not text")
    return data


def _split_by_file(
    root: Path, files: list[Path], read: Callable[[Path], bytes | None]
) -> tuple[bytes, bytes, tuple[str, ...], tuple[str, ...]]:
    """The seeded file order, validation first (see the module docstring); ``read`` gives a file's bytes
    (None: leave it out). Files after the cap are not read."""
    total = min(SIZE_CAP, sum(p.stat().st_size for p in files))
    val_target = math.ceil(VAL_FRACTION * total)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    val: list[bytes] = []
    train: list[bytes] = []
    val_names: list[str] = []
    train_names: list[str] = []
    for i in order:
        val_size, train_size = sum(map(len, val)), sum(map(len, train))
        if train_size >= total - val_size:
            break
        content = read(files[i])
        if content is None:
            continue
        to_val = val_size < val_target and len(val_names) < len(files) - 1
        (val if to_val else train).append(content)
        (val_names if to_val else train_names).append(files[i].relative_to(root).as_posix())
    val_bytes = b"".join(val)
    return b"".join(train)[: total - len(val_bytes)], val_bytes, tuple(train_names), tuple(val_names)


def _stdlib_read(path: Path) -> bytes | None:
    data = path.read_bytes()
    return data if data and b"\0" not in data else None


def _tensor(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@cache
def load_text(name: str) -> TextData:
    """The corpus ``text`` or ``text:PATH`` (see the module docstring); cached per name."""
    label = f"dataset {name!r}"
    if name == STDLIB_NAME:
        root = stdlib_root()
        files = _stdlib_files(root)
        if not files:
            raise TextUnavailable(f"{label}: no *.py files under the standard library {root}")
        train, val, train_names, val_names = _split_by_file(root, files, _stdlib_read)
    else:
        root = Path(name[len(PREFIX) :]).expanduser()
        files = _user_files(label, root)
        contents = {p: _read(label, p) for p in files}
        if len(files) == 1:
            data = contents[files[0]][:SIZE_CAP]
            cut = len(data) - math.ceil(VAL_FRACTION * len(data))
            if cut < 1:
                raise TextUnavailable(f"{label}: {files[0]} is too short to split ({len(data)} bytes)")
            train, val, train_names, val_names = data[:cut], data[cut:], (files[0].name,), (files[0].name,)
        else:
            train, val, train_names, val_names = _split_by_file(root, files, contents.__getitem__)
    return TextData(name, _tensor(train), _tensor(val), train_names, val_names)


def is_text_name(name: object) -> bool:
    """Whether ``name`` names a text corpus (``text`` or ``text:PATH``)."""
    return isinstance(name, str) and (name == STDLIB_NAME or name.startswith(PREFIX))


def check_text_name(name: str) -> None:
    """``ValueError`` with one line for a ``text:PATH`` whose path does not exist (without reading it)."""
    if name != STDLIB_NAME and not Path(name[len(PREFIX) :]).expanduser().exists():
        raise ValueError(f"dataset {name!r}: {name[len(PREFIX) :]} does not exist")


__all__ = [
    "SIZE_CAP",
    "SPLIT_SEED",
    "VAL_FRACTION",
    "VOCAB",
    "TextData",
    "TextUnavailable",
    "check_text_name",
    "is_text_name",
    "load_text",
    "stdlib_root",
]
