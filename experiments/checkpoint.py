"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is a ``torch.save`` dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ... | None, "scaler": ... | None,
     "progress": {"update", "epoch", "batch_in_epoch", "metrics_lines", "histogram_lines", "best", "meter", ...},
     "rng": {"python", "numpy", "torch", "cuda": [per device] | None}}

``model`` holds the plain (un-wrapped, un-compiled) module's state_dict, so experiments/nmt/average.py and any
reader can load it without the harness. Files are written atomically (tmp + fsync + os.replace).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.records import atomic_write

# Scheduler attributes that count progress; every other attribute comes from the config, so that a resume
# with a larger trainer.max_updates extends the schedule instead of restoring the old horizon.
SCHEDULER_COUNTERS = ("last_epoch", "_step_count", "_last_lr")


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, *, model, optimizer, scheduler, scaler, progress: dict[str, Any]) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": progress,
        "rng": rng_state(),
    }
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load(path: Path, *, model, optimizer, scheduler, scaler) -> dict[str, Any]:
    """Restore the objects in place (and the RNGs) and return the checkpoint's ``progress``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        merged = scheduler.state_dict()
        merged.update({k: state["scheduler"][k] for k in SCHEDULER_COUNTERS if k in state["scheduler"]})
        scheduler.load_state_dict(merged)
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["progress"]


def epoch_checkpoints(directory: Path) -> list[Path]:
    """The epoch<N>.pt files of ``directory``, oldest first."""
    return sorted(Path(directory).glob("epoch*.pt"), key=lambda p: int(p.stem[len("epoch"):]))


def prune_epoch_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch<N>.pt files."""
    epochs = epoch_checkpoints(directory)
    for old in epochs[: max(len(epochs) - keep, 0)]:
        old.unlink()
