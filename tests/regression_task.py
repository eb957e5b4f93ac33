"""A small genuine task for the loop's mechanics tests: least-squares regression on a fixed, seeded dataset.

y = x . w* + 0.1 noise with x ~ N(0, I_d); the model is a small MLP with dropout (so resume tests also check
that RNG states are restored). It implements experiments/task.py's contract like NMTTask does, in ~1% of the
time: losses are sums with stats["sample_size"] = number of examples, batches are interleaved across ranks
(batch i of the epoch goes to rank i % world_size) so a global batch of 2 x B on 2 ranks equals 2 consecutive
batches on one rank.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from experiments.task import DataError


class RegressionTask:
    def __init__(self, seed: int, n_train: int = 256, n_valid: int = 64, dim: int = 8, batch_size: int = 16,
                 data_file: str | None = None, num_avg_checkpoints: int = 2, loss_scale: float = 1.0,
                 finalize_seconds: float = 0.0, finalize_marker: str | None = None):
        self.seed, self.n_train, self.n_valid, self.dim, self.batch_size = seed, n_train, n_valid, dim, batch_size
        self.data_file = data_file
        self.num_avg_checkpoints = num_avg_checkpoints
        self.loss_scale = loss_scale  # > 1 makes the loss blow up (divergence tests)
        self.finalize_seconds = finalize_seconds  # a long first final evaluation (signal tests): it appends a
        self.finalize_marker = finalize_marker    # line to this file when it starts, and sleeps if it is the first

    def prepare(self) -> None:
        if self.data_file is not None and not Path(self.data_file).is_file():
            raise DataError(f"task.data_file={self.data_file} does not exist; create it or set task.data_file=null")
        g = torch.Generator().manual_seed(1234)  # the dataset is fixed; self.seed only orders it
        w = torch.randn(self.dim, 1, generator=g)
        x = torch.randn(self.n_train + 2 * self.n_valid, self.dim, generator=g)
        y = x @ w + 0.1 * torch.randn(x.shape[0], 1, generator=g)
        n, v = self.n_train, self.n_valid
        self.splits = {"train": (x[:n], y[:n]), "valid": (x[n:n + v], y[n:n + v]), "test": (x[n + v:], y[n + v:])}

    def build_model(self, model_cfg: Mapping) -> nn.Module:
        hidden, dropout = int(model_cfg["hidden"]), float(model_cfg["dropout"])
        return nn.Sequential(nn.Linear(self.dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1):
        x, y = self.splits["train"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        batches = order.split(self.batch_size)
        for i in range(rank, len(batches) - len(batches) % world_size, world_size):
            yield {"x": x[batches[i]], "y": y[batches[i]]}

    def loss(self, model: nn.Module, batch):
        err = model(batch["x"]) - batch["y"]  # (B, 1)
        loss_sum = self.loss_scale * 0.5 * (err ** 2).sum()
        return loss_sum, {"loss": float(loss_sum.detach()), "sample_size": float(len(err))}

    def metrics(self, stats: Mapping[str, float]) -> dict[str, float]:
        return {"loss": stats["loss"] / stats["sample_size"]}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        model.eval()
        x, y = self.splits[split]
        device = next(model.parameters()).device
        loss, stats = self.loss(model, {"x": x.to(device), "y": y.to(device)})
        return self.metrics(stats)

    def finalize(self, model: nn.Module, epoch_checkpoints: list[Path]) -> dict[str, float]:
        if self.finalize_marker:
            first = not Path(self.finalize_marker).exists()
            with open(self.finalize_marker, "a") as f:
                f.write("started\n")
            if first:
                time.sleep(self.finalize_seconds)
        return {**self.evaluate(model, "test"), "averaged_checkpoints": float(len(epoch_checkpoints))}
