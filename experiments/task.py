"""The contract between the training loop and a task (NMT, image classification, language modelling).

A task is an object built by Hydra from ``cfg.task`` (``_target_: experiments.nmt.task.NMTTask``, say). It owns
its data, its loss and its metrics. The loop (``experiments/loop.py``) knows nothing task-specific: it calls
only the methods below, in this order::

    task.prepare()                                   # download / verify / tokenize / cache (idempotent)
    model = task.build_model(cfg.model)
    for epoch in ...:
        for batch in task.train_batches(epoch, rank, world_size):   # batch: dict[str, Tensor] on CPU
            loss_sum, stats = task.loss(model, to_device(batch, device))  # back-propagate loss_sum
            ...                                                     # grads /= sum of stats["sample_size"]
        task.evaluate(model, "valid")                # -> {"loss": ..., "ppl": ...}
    task.finalize(model, epoch_checkpoints)          # e.g. checkpoint averaging, beam search, BLEU

A task that carries state across batches (the LM's truncated-BPTT hidden state) may also define
``state_dict() -> object`` and ``load_state_dict(state)``: the loop calls ``state_dict()`` on every rank when it
writes a checkpoint (so the task may gather across ranks) and ``load_state_dict`` on resume.

Losses are *sums* over the batch, with ``stats["sample_size"]`` the number of units they sum over (target
tokens, images, words). The loop divides the accumulated gradient by the global sample size after gradient
accumulation and all-reduce, so one process and N processes with the same global batch take the same step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Protocol

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): for one-line user errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a batch to ``device`` (asynchronously where the memory allows)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def accumulate(totals: dict[str, torch.Tensor], stats: Mapping[str, torch.Tensor | float],
               device: torch.device) -> None:
    """``totals[k] += stats[k]`` as float64 tensors on ``device``: summing a task's statistics over batches
    never waits for the device (0-dim tensors stay there, Python numbers are added as scalars rather than copied
    over; ``float()`` of a sum reads it once)."""
    for k, v in stats.items():
        total = totals[k] if k in totals else torch.zeros((), dtype=torch.float64, device=device)
        totals[k] = total + (v.double() if torch.is_tensor(v) else float(v))


class UserError(Exception):
    """A problem the user can fix (missing data, corrupt archive, impossible config).

    Its message is one line that names the problem and the fix; ``run.py`` prints it and exits non-zero.
    """


class DataError(UserError):
    """Missing, corrupt or foreign data."""


class Task(Protocol):
    def prepare(self) -> None:
        """Make the data ready on disk (idempotent, resumable). Raise DataError with a one-line fix."""

    def build_model(self, model_cfg: Mapping) -> nn.Module:
        """Build the model from ``cfg.model`` (which may need the task's vocabulary sizes, classes...)."""

    def train_batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterable[Batch]:
        """This rank's training batches of ``epoch``, deterministic given the task's seed and ``epoch``.

        The loop resumes mid-epoch by skipping the batches it has already consumed, so the order must not
        depend on anything but (seed, epoch, rank, world_size).
        """

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Return (summed loss to back-propagate, summed statistics incl. ``sample_size``).

        Statistics computed on the device stay 0-dim tensors (detached): converting them with ``float()`` here
        would make the host wait for the forward pass before it can queue the backward one."""

    def metrics(self, stats: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
        """Turn summed statistics of any number of batches (floats or 0-dim tensors) into reported metrics
        (floats): loss (nats), ppl, acc..."""

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on ``split`` ("valid" or "test"), model in eval mode, no gradients."""

    def finalize(self, model: nn.Module, epoch_checkpoints: list[Path]) -> dict[str, float]:
        """End-of-training evaluation (e.g. average the last epoch checkpoints, beam search, BLEU)."""
