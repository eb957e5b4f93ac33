"""Checks of the loop's options (configs/trainer/default.yaml) before anything runs, and the values derived
from them: the thread count and the divergence bound.

Every bad value is a UserError with one line naming the key, the value and what is allowed, raised before the
run directory is touched.
"""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig, ListConfig

from experiments.task import UserError

DIVERGENCE_FACTOR = 10.0  # trainer.diverge_loss_above=auto: 10 x the loss of a uniform prediction


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _need(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: use {allowed}")


def check_trainer_options(cfg: DictConfig) -> None:
    """One-line UserErrors for impossible top-level and ``trainer.*`` values."""
    _need(_is_int(cfg.get("seed")), "seed", cfg.get("seed"), "an integer, e.g. seed=1")
    t = cfg.trainer
    if t.max_updates is None and t.get("max_epochs") is None:
        raise UserError("neither trainer.max_updates nor trainer.max_epochs is set; set one of them")
    for key in ("max_updates", "max_epochs"):
        value = t.get(key)
        _need(value is None or (_is_int(value) and value >= 1), f"trainer.{key}", value, "an integer >= 1 or null")
    for key, low in (("update_freq", 1), ("log_interval", 1), ("valid_interval_updates", 0),
                     ("save_interval_updates", 0), ("keep_epoch_checkpoints", 0)):
        value = t.get(key)
        _need(_is_int(value) and value >= low, f"trainer.{key}", value, f"an integer >= {low}")
    _need(_is_number(t.clip_norm) and t.clip_norm >= 0, "trainer.clip_norm", t.clip_norm,
          "a number >= 0 (0: no clipping)")
    _need(t.precision in ("fp32", "bf16", "fp16"), "trainer.precision", t.precision, "fp32, bf16 or fp16")
    _need(t.device in ("auto", "cpu", "cuda") or str(t.device).startswith("cuda:"), "trainer.device", t.device,
          "auto, cpu or cuda")
    _need(t.best_mode in ("min", "max"), "trainer.best_mode", t.best_mode, "min or max")
    thread_count(t.threads)  # checks it
    bound = t.diverge_loss_above
    _need(bound is None or bound == "auto" or _is_number(bound), "trainer.diverge_loss_above", bound,
          "auto (10 x the uniform-prediction loss), a number, or null (only non-finite losses)")
    hist = t.grad_histogram_updates
    _need(hist is None or (isinstance(hist, (list, ListConfig)) and all(_is_int(u) and u >= 1 for u in hist)),
          "trainer.grad_histogram_updates", hist, "a list of updates, e.g. [1,5,10], or [] for none")
    interval = t.get("diagnostics_interval", 0)
    _need(_is_int(interval) and interval >= 0, "trainer.diagnostics_interval", interval,
          "an integer >= 0 (updates between diagnostics; 0: off)")
    warn_at = t.get("plateau_warning_update")
    _need(warn_at is None or (_is_int(warn_at) and warn_at >= 1), "trainer.plateau_warning_update", warn_at,
          "an integer >= 1 or null (no plateau warning)")
    _need(isinstance(t.get("stop_on_plateau_warning", False), bool), "trainer.stop_on_plateau_warning",
          t.get("stop_on_plateau_warning"), "true or false")
    if t.get("stop_on_plateau_warning", False) and not (interval and warn_at):
        raise UserError("trainer.stop_on_plateau_warning=true needs the diagnostics: set trainer.diagnostics_interval"
                        " (e.g. 10) and trainer.plateau_warning_update (e.g. 50)")
    for key in ("compile", "deterministic", "progress_bar", "valid_at_epoch_end"):
        _need(isinstance(t.get(key), bool), f"trainer.{key}", t.get(key), "true or false")


def thread_count(setting: Any, jobs: int = 1) -> int | None:
    """``trainer.threads``: an integer >= 1, ``auto`` or null (torch's default).

    ``auto`` shares the cores among the processes that run at once: the cores this process may use
    (``os.sched_getaffinity``; under SLURM the task's ``SLURM_CPUS_PER_TASK``), divided by ``jobs`` (the sweep's
    parallel jobs on this machine, e.g. joblib's n_jobs) and by the torchrun processes on this node
    (``LOCAL_WORLD_SIZE``), at least 1. So a single run uses every core, and a sweep of 2 parallel jobs on 2
    cores one thread each.
    """
    if setting is None:
        return None
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
        if slurm.isdigit() and int(slurm) > 0:
            cores = min(cores, int(slurm))
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        per_node = int(local) if local.isdigit() and int(local) > 0 else 1
        return max(1, cores // (max(1, jobs) * per_node))
    _need(_is_int(setting) and setting >= 1, "trainer.threads", setting, "an integer >= 1, auto or null")
    return int(setting)


def divergence_bound(setting: Any, task: Any) -> float | None:
    """The training loss above which the run ends as diverged (non-finite losses always end it).

    ``auto``: DIVERGENCE_FACTOR x the task's ``uniform_loss()`` (the loss of predicting every class alike:
    ln V for a vocabulary of V words, ln K for K classes), an order of magnitude above where training starts;
    a task without ``uniform_loss`` gets no bound. A number is used as it is; null means no bound.
    """
    if setting == "auto":
        uniform = getattr(task, "uniform_loss", None)
        return DIVERGENCE_FACTOR * float(uniform()) if callable(uniform) else None
    return None if setting is None else float(setting)
