"""Tiny CIFAR-10 and ImageNet data in the real on-disk formats, for the vision tests.

`write_cifar10(root)` writes `cifar-10-batches-py/` with data_batch_1..5, test_batch and batches.meta exactly as
the CIFAR-10 python version does (pickled dicts: "batch_label", "labels", "data" uint8 (N, 3072), "filenames";
batches.meta: "label_names", "num_cases_per_batch", "num_vis"). The images are learnable: each class is a
coloured blob at a class-specific place, plus noise. `write_cifar10_batches` writes given images in that layout,
e.g. real MNIST-5k digits through `mnist_as_cifar`. Their MD5 sums differ from the real files, so the task
reads them with `task.verify=false`. `write_imagenet(root)` writes real JPEGs into train/<class> and val/<class>.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """uint8 (N, 3, size, size): class c is a bright square at a position and colour given by c, on noise."""
    n = len(labels)
    images = rng.integers(0, 80, (n, 3, size, size), dtype=np.int64)
    for i, c in enumerate(labels):
        y, x = (c // 5) * size // 2 + 2, (c % 5) * size // 6 + 1
        images[i, c % 3, y:y + size // 3, x:x + size // 5] += 170
    return images.clip(0, 255).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 64, test_size: int = 200, seed: int = 0) -> Path:
    """<root>/cifar-10-batches-py with 5 x per_batch training and test_size test images; returns root."""
    rng = np.random.default_rng(seed)
    splits = []
    for n in [per_batch] * 5 + [test_size]:
        labels = rng.integers(0, 10, n)
        splits.append((class_images(labels, rng), labels))
    return write_cifar10_batches(root, splits[:5], splits[5])


def write_cifar10_batches(root: Path, train: list[tuple[np.ndarray, np.ndarray]],
                          test: tuple[np.ndarray, np.ndarray]) -> Path:
    """<root>/cifar-10-batches-py from 5 training (images uint8 (N, 3, 32, 32), labels) pairs and a test pair,
    pickled as the CIFAR-10 python version; returns root."""
    if len(train) != 5:
        raise ValueError(f"CIFAR-10 has 5 training batches; got {len(train)}")
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (images, labels) in zip(names, [*train, test]):
        n = len(labels)
        batch = {"batch_label": f"{name} of 5" if name != "test_batch" else "testing batch 1 of 1",
                 "labels": [int(c) for c in labels],
                 "data": np.ascontiguousarray(images, dtype=np.uint8).reshape(n, 3072),
                 "filenames": [f"img_{name}_{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": LABEL_NAMES, "num_cases_per_batch": len(train[0][1]), "num_vis": 3072}, f,
                    protocol=2)
    return Path(root)


def mnist_as_cifar(images: np.ndarray) -> np.ndarray:
    """Real 1 x 28 x 28 digits (uint8) as CIFAR-10 images: zero-padded by 2 to 32 x 32, grey copied to 3 channels."""
    padded = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return np.repeat(padded, 3, axis=1)


def write_imagenet(root: Path, classes: int = 3, per_class: int = 4, size: int = 40, seed: int = 0) -> Path:
    """<root>/{train,val}/n0000000<c>/*.JPEG: real JPEG files (PIL), per_class per class and split."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = Path(root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = class_images(np.array([c]), rng, size)[0].transpose(1, 2, 0)   # (H, W, 3)
                Image.fromarray(image).save(folder / f"{split}_{c}_{i}.JPEG", quality=90)
    return Path(root)
