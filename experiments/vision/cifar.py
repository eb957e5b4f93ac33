"""CIFAR-10 on disk: find, fetch, verify and read the `cifar-10-batches-py` pickles into uint8 tensors.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009; https://www.cs.toronto.edu/~kriz/cifar.html.
The files are those of torchvision.datasets.CIFAR10 (its URL and MD5 sums are used here):

    <data_dir>/cifar-10-python.tar.gz                          (optional: extracted when the folder is missing)
    <data_dir>/cifar-10-batches-py/data_batch_1 .. data_batch_5    10,000 training images each
                                   test_batch                      10,000 test images
                                   batches.meta                    {"label_names": [10 names], ...}

Each batch is a pickled dict {"data": uint8 array (N, 3072) = (N, 3, 32, 32) row-major, "labels": N ints in
0..9, "batch_label": str, "filenames": [N str]}. Pickles can run code when loaded, so with `verify=True` (the
default) every file must match torchvision's MD5 first; `verify=False` is for the tests' small files written
in the same format. Whatever `verify` says, the batches are read by an unpickler that builds only numpy arrays,
dicts, lists and strings (``_BatchUnpickler``: anything else is refused), the archive is downloaded from
CIFAR-10's https URL and checked against its published MD5 (c58f30108f718f92721af3b95e74349a) before it is
extracted, and extraction refuses absolute, ``..``, link and device members
(experiments/corpora/files.py:safe_extract). Corrupt or foreign files raise DataError with one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from experiments.corpora import files
from experiments.task import DataError

FOLDER = CIFAR10.base_folder                                    # "cifar-10-batches-py"
ARCHIVE = CIFAR10.filename                                      # "cifar-10-python.tar.gz"
SPLIT_FILES = {"train": [name for name, _ in CIFAR10.train_list], "test": [name for name, _ in CIFAR10.test_list]}
MD5 = {**dict(CIFAR10.train_list), **dict(CIFAR10.test_list), CIFAR10.meta["filename"]: CIFAR10.meta["md5"],
       ARCHIVE: CIFAR10.tgz_md5}
META = CIFAR10.meta["filename"]                                 # "batches.meta"
NUM_CLASSES = 10


def locate(data_dir: Path, *, download: bool, verify: bool) -> Path:
    """The `cifar-10-batches-py` folder under data_dir, extracted from the archive or downloaded if needed."""
    folder = data_dir / FOLDER
    needed = [*SPLIT_FILES["train"], *SPLIT_FILES["test"], META]
    if not all((folder / name).exists() for name in needed):
        archive = data_dir / ARCHIVE
        if archive.exists():
            _check_md5(archive, verify)
            files.safe_extract(archive, data_dir)
        elif download:
            _download(data_dir)
        else:
            missing = next(name for name in needed if not (folder / name).exists())
            raise DataError(f"CIFAR-10 not found ({folder / missing} is missing); put {ARCHIVE} or {FOLDER}/ in "
                            f"{data_dir}, or allow download (task.download=true)")
    for name in needed:
        _check_md5(folder / name, verify)
    return folder


def _check_md5(path: Path, verify: bool) -> None:
    if not path.exists():
        raise DataError(f"{path} is missing after extraction; delete {path.parent} and rerun (task.download=true)")
    if verify and not check_integrity(str(path), MD5[path.name]):
        raise DataError(f"{path} fails its MD5 check (corrupt, truncated or not the CIFAR-10 file); delete it "
                        f"and rerun with task.download=true, or put the original file there")


def _download(data_dir: Path) -> None:
    """Download the archive (https), check its published MD5 (a mismatch is moved aside), extract it safely."""
    archive = data_dir / ARCHIVE
    data_dir.mkdir(parents=True, exist_ok=True)
    files.download([CIFAR10.url], archive, f"put {ARCHIVE} or {FOLDER}/ in {data_dir} by hand")
    files.verify_checksum(archive, MD5[ARCHIVE], "the published MD5", algorithm="md5")
    files.safe_extract(archive, data_dir)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, strings, numbers and numpy arrays) and refuses every
    other global, so a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (images uint8 (N, 3, 32, 32), labels int64 (N,)); DataError if it is not one."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated, not a pickle, a pickle of something else: all "not a CIFAR-10 batch"
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}); delete it and rerun "
                        f"with task.download=true, or put the original file there") from e
    data = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        keys = sorted(batch)[:6] if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path} is not a CIFAR-10 batch (want 'data' uint8 (N, 3072) and N 'labels', found "
                        f"{keys}; CIFAR-100 has 'fine_labels'); use the CIFAR-10 python version files")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{path} has labels outside 0..9; it is not CIFAR-10: use the CIFAR-10 python version")
    return data.reshape(-1, 3, 32, 32), labels


def read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of "train" (50,000) or "test" (10,000): (uint8 (N, 3, 32, 32), int64 (N,)) tensors."""
    parts = [read_batch(folder / name) for name in SPLIT_FILES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)
