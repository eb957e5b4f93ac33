"""CIFAR-10 augmentation and normalization on whole batches of tensors (CPU or GPU), as the paper's recipe:

    random crop 32x32 from the image zero-padded by 4 on each side, horizontal flip with probability 1/2,
    x = (pixel / 255 - mean) / std per channel, mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010).

The random draws (crop offsets, flips) are made on the CPU by `draw` with a generator seeded by (seed, epoch),
so an epoch's batches are the same on any device and after a resume; `apply` then runs on the batch's device
(one gather for all crops), which keeps a GPU busy without data-loader workers.
"""

from __future__ import annotations

import functools

import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
PAD = 4


def draw(n: int, generator: torch.Generator, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (n, 2) in [0, 2 pad] (row, column) and flip flags (n,) for n images."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """images (B, C, H, W) -> the (H, W) crops at `offsets` of the zero-padded images, flipped where `flips`."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))                 # (B, C, H + 2p, W + 2p)
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)             # (B, H)
    cols = torch.arange(w, device=images.device).expand(b, w)                      # (B, W)
    cols = torch.where(flips.to(images.device)[:, None], cols.flip(1), cols) + offsets[:, 1, None]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


@functools.lru_cache(maxsize=None)
def _channel_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as (1, C, 1, 1) tensors on ``device``, built once per device (not per batch)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def normalize(images: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (pixel / 255 - mean) / std."""
    mean, std = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float() / 255.0 - mean) / std
