"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is a ``torch.save`` dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ... | None, "scaler": ... | None,
     "progress": {"update", "epoch", "batch_in_epoch", "metrics_lines", "histogram_lines", "best", "meter", ...},
     "rng": {"python": [version, [625 ints], gauss], "numpy": {"key": uint32 tensor, "pos", "has_gauss",
             "cached_gaussian"}, "torch": ByteTensor, "cuda": [per device] | None}}

``model`` holds the plain (un-wrapped, un-compiled) module's state_dict, so experiments/nmt/average.py and any
reader can load it without the harness. Files are written atomically (tmp + fsync + os.replace).

Everything in a checkpoint is a tensor or a plain Python value, so it loads with ``torch.load(...,
weights_only=True)``, which cannot run code from the file. Checkpoints written before this format (numpy's RNG
state as an ndarray) need the explicit opt-in ``+trust_checkpoint=true``: they are then unpickled in full,
which runs whatever code the file names, so use it only on files you wrote yourself.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.records import atomic_write
from experiments.task import UserError

# Scheduler attributes that count progress; every other attribute comes from the config, so that a resume
# with a larger trainer.max_updates extends the schedule instead of restoring the old horizon.
SCHEDULER_COUNTERS = ("last_epoch", "_step_count", "_last_lr")


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if isinstance(npy, dict):
        np.random.set_state(("MT19937", npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:  # a trusted checkpoint of the older format: numpy's own tuple
        np.random.set_state(npy)
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


def read(path: Path, trust: bool = False) -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded with weights_only=True (or fully unpickled if ``trust``); a
    UserError with one line if the file is not a checkpoint of this project."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):  # weights_only refused a class
            raise UserError(f"{path} holds objects other than tensors and plain values, which could run code when "
                            f"loaded, so it was not loaded: a checkpoint from an older version of this project or "
                            f"not from it; if you wrote it yourself, rerun with +trust_checkpoint=true") from e
        detail = next((line for line in reversed(str(e).splitlines()) if "rror" in line), "")
        raise UserError(f"{path} is damaged or not a checkpoint (unpickling failed: {detail.strip()[:120]}); delete "
                        f"it to start over, or use a new hydra.run.dir") from e
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, foreign formats: all one line
        raise UserError(f"{path} is damaged or not a checkpoint ({type(e).__name__}: {_short(e)}); delete it "
                        f"to start over, or use a new hydra.run.dir") from e
    missing = [k for k in ("model", "optimizer", "progress", "rng") if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this project (no {', '.join(missing)}); delete it to start "
                        f"over, or use a new hydra.run.dir")
    return state


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def load(path: Path, *, model, optimizer, scheduler, scaler, trust: bool = False) -> dict[str, Any]:
    """Restore the objects in place (and the RNGs) and return the checkpoint's ``progress``."""
    state = read(path, trust)
    try:
        _restore(state, model, optimizer, scheduler, scaler)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:  # another model or optimizer
        raise UserError(f"cannot resume from {path} ({_short(e)}); rerun with the config it was written with, "
                        f"or use a new hydra.run.dir") from e
    return state["progress"]


def _restore(state: dict, model, optimizer, scheduler, scaler) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        merged = scheduler.state_dict()
        merged.update({k: state["scheduler"][k] for k in SCHEDULER_COUNTERS if k in state["scheduler"]})
        scheduler.load_state_dict(merged)
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def epoch_checkpoints(directory: Path) -> list[Path]:
    """The epoch<N>.pt files of ``directory``, oldest first."""
    return sorted(Path(directory).glob("epoch*.pt"), key=lambda p: int(p.stem[len("epoch"):]))


def prune_epoch_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch<N>.pt files."""
    epochs = epoch_checkpoints(directory)
    for old in epochs[: max(len(epochs) - keep, 0)]:
        old.unlink()
