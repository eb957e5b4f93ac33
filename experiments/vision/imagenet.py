"""ImageNet (ILSVRC-2012) as torchvision ImageFolders, with the standard ResNet crops.

    <data_dir>/train/<class>/*.JPEG      1,281,167 images, 1000 classes
    <data_dir>/val/<class>/*.JPEG        50,000 images (the usual val/ re-sorted into class folders)

Training: RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3), horizontal flip, normalize with the ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Evaluation: Resize(256), CenterCrop(224), normalize.
These are the crops of torchvision's reference recipe and of the original code (cifar_imagenet/imagenet.py).
JPEG decoding runs in `workers` data-loader processes; their random crops are seeded by (seed, epoch).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets, transforms

from experiments.task import DataError, first_line

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_transform(size: int = 224) -> transforms.Compose:
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def eval_transform(size: int = 224) -> transforms.Compose:
    """Resize the short side to size * 8 / 7 (256 for 224), then the centre crop."""
    return transforms.Compose([transforms.Resize(round(size * 8 / 7)), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def image_folder(data_dir: Path, split: str, transform) -> datasets.ImageFolder:
    """ImageFolder over <data_dir>/<split>; DataError with the expected layout if it is missing or empty."""
    folder = data_dir / split
    layout = f"put ImageNet in {data_dir} as train/<class>/*.JPEG and val/<class>/*.JPEG (or set task.data_dir)"
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; {layout}")
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders / no images
        raise DataError(f"{folder} holds no images ({first_line(e)[:120]}); {layout}") from e


def loader(dataset, indices, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Evaluation batches of (images float (B, 3, 224, 224), labels (B,)) over `indices` of `dataset`, in order."""
    subset = torch.utils.data.Subset(dataset, list(indices))
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=torch.cuda.is_available())
