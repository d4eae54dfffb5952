"""Labelled greyscale image sets (scikit-learn's digits, Fashion-MNIST) and their preprocessing."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from targets.data import DATA_DIR_ENV, DataError
from targets.flows.config import Dequantisation

FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class ImageSet:
    """Flattened greyscale images with integer intensities in [0, max_value] and class labels."""

    name: str
    images: np.ndarray  # [N, height * width], integers
    labels: np.ndarray  # [N], integers in [0, n_classes)
    shape: tuple[int, int]
    max_value: int

    @property
    def n_classes(self) -> int:
        """Number of distinct labels."""
        return int(self.labels.max()) + 1

    def fingerprint(self) -> str:
        """sha256 of the pixels, labels and shape: identifies the data a model was trained on."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        digest.update(repr((self.shape, self.max_value)).encode())
        return digest.hexdigest()


def load_digits() -> ImageSet:
    """scikit-learn's 1797 8x8 handwritten digits (intensities 0..16, labels 0..9)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return ImageSet("digits", bunch.data.astype(np.int64), bunch.target, (8, 8), 16)


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (MNIST's format), gzip-compressed or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in dtypes:
        raise DataError(f"{path} is not an IDX file")
    n_dims = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * n_dims)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} values, its header says {dims}")
    return data.reshape(dims)


def load_fashion_mnist(data_dir: str | Path | None = None) -> ImageSet:
    """The 60,000 Fashion-MNIST training images (28x28, 0..255, 10 classes) from local files.

    The files are looked for in `data_dir`, else in the folder named by GMP_DATA_DIR.
    """
    folder = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    advice = (
        f"Download {' and '.join(FASHION_FILES)} from {FASHION_URL} and pass their folder as "
        f"data_dir or set {DATA_DIR_ENV} to it."
    )
    if folder is None:
        raise DataError(
            f"Fashion-MNIST file {FASHION_FILES[0]!r} not found: no data_dir given and "
            f"{DATA_DIR_ENV} is not set. {advice}"
        )
    paths = [Path(folder) / name for name in FASHION_FILES]
    for path in paths:
        if not path.is_file():
            raise DataError(f"Fashion-MNIST file {path.name!r} not found in {folder}. {advice}")
    images, labels = (read_idx(path) for path in paths)
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(f"unexpected Fashion-MNIST shapes {images.shape} and {labels.shape}")
    return ImageSet(
        "fashion",
        images.reshape(len(images), -1).astype(np.int64),
        labels.astype(np.int64),
        (28, 28),
        255,
    )


def checkerboard_order(shape: tuple[int, int]) -> Tensor:
    """Flat pixel indices: the squares with even row + column first, then the odd ones."""
    rows, cols = np.indices(shape)
    parity = ((rows + cols) % 2).reshape(-1)
    return torch.from_numpy(np.argsort(parity, kind="stable"))


def dequantise(
    pixels: Tensor, max_value: int, config: Dequantisation, generator: torch.Generator | None
) -> Tensor:
    """Integer intensities -> the flow's logit space (float32), with fresh uniform noise."""
    levels = config.levels or max_value + 1
    quantised = torch.div(pixels * levels, max_value + 1, rounding_mode="floor")
    noise = torch.rand(pixels.shape, generator=generator, dtype=torch.float32)
    unit = (quantised.to(torch.float32) + noise) / levels
    return torch.logit(config.alpha + (1 - 2 * config.alpha) * unit)
