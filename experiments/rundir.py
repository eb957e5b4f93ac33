"""A run directory belongs to one configuration and one process at a time.

``claim(run_dir)`` is held for the whole run. On the main process it

1. takes an advisory lock (fcntl) on ``<run_dir>/.lock``: a second process on the same directory gets one line
   naming the holder's pid and exits, instead of writing the same records twice;
2. removes temporary files left by writes that a kill interrupted (``.<name>.tmp<pid>``: records.atomic_write);
   with the lock held, no other process can be writing them.

Then ``check_fingerprint`` compares the config with the one the directory trained with (``fingerprint.json``,
written by the loop when training starts, so a run that failed before it does not tie the directory to its
config). Every process checks; a mismatch names the differing keys and leaves every file as it was.

The fingerprint is the composed config (``OmegaConf.to_container(cfg, resolve=False)``: interpolations stay as
written, so ``${trainer.max_updates}`` in a schedule does not change when the run is extended), flattened to
dotted keys, minus the keys a resume may change: ``EXEMPT_KEYS`` (extending the run, logging, speed, the
escape hatches) and, under ``task``, the paths in ``PATH_KEYS`` (data may live elsewhere on another machine).
``+resume=force`` resumes anyway and records the new config.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from experiments import records
from experiments.task import UserError

log = logging.getLogger(__name__)

EXEMPT_KEYS = ("trainer.max_updates", "trainer.max_epochs", "trainer.log_interval", "trainer.progress_bar",
               "trainer.save_interval_updates", "trainer.threads", "trainer.device", "trainer.compile",
               "trainer.grad_histogram_updates", "trainer.diagnostics_interval", "trainer.plateau_warning_update",
               "trainer.stop_on_plateau_warning", "logger", "resume", "trust_checkpoint")
PATH_KEYS = ("data_root", "data_dir", "raw_dir", "archive", "ding_file", "urls", "url", "download")
FINGERPRINT = "fingerprint.json"


class RunDirError(UserError):
    """The run directory cannot be used by this run; nothing in it was changed (run.py records no failure)."""


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The config's dotted keys -> values (as JSON text), minus the keys a resume may change."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif not _exempt(prefix):
            flat[prefix] = json.dumps(node, sort_keys=True, default=str)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return flat


def _exempt(key: str) -> bool:
    if any(key == e or key.startswith(e + ".") for e in EXEMPT_KEYS):
        return True
    parts = key.split(".")
    return parts[0] == "task" and parts[-1] in PATH_KEYS


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '(absent)')} -> {new.get(k, '(absent)')}" for k in keys if old.get(k) != new.get(k)]


@contextlib.contextmanager
def claim(run_dir: Path, main: bool = True) -> Iterator[None]:
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"hydra.run.dir={run_dir} is a file, not a directory; choose another hydra.run.dir")
    with _lock(run_dir) if main else contextlib.nullcontext():
        if main:
            remove_stale_temporaries(run_dir)
        yield


@contextlib.contextmanager
def _lock(run_dir: Path) -> Iterator[None]:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / ".lock", "a+")
    except OSError as e:
        raise RunDirError(f"cannot write to the run directory {run_dir} ({e.strerror}); choose a writable "
                          f"hydra.run.dir") from e
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise RunDirError(f"{run_dir} is in use by another run (pid {holder}); wait for it to end, or use "
                              f"another hydra.run.dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete ``.<name>.tmp<pid>`` files of run_dir and run_dir/checkpoints (writes a kill interrupted)."""
    stale = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) of interrupted writes: %s", len(stale),
                 ", ".join(p.name for p in stale[:5]))
    return stale


def check_fingerprint(run_dir: Path, cfg: DictConfig) -> None:
    """A RunDirError naming the differing keys if run_dir trained with another config (unless +resume=force)."""
    path = run_dir / FINGERPRINT
    if not path.exists():
        if (run_dir / "checkpoints" / "last.pt").exists():
            log.warning("%s has a checkpoint but no %s (an older run): its config cannot be checked", run_dir,
                        FINGERPRINT)
        return
    try:
        old = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); restore it, or use a new hydra.run.dir") from e
    diff = differences(old, fingerprint(cfg))
    if diff and cfg.get("resume") != "force":
        more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
        raise RunDirError(f"{run_dir} holds a run of another configuration ({'; '.join(diff[:4])}{more}); "
                          f"use a new hydra.run.dir, or add +resume=force to continue it with this config")
    if diff:
        log.warning("+resume=force: continuing %s with a changed config (%s)", run_dir, "; ".join(diff))


def write_fingerprint(run_dir: Path, cfg: DictConfig) -> None:
    records.write_json(run_dir / FINGERPRINT, {"config": fingerprint(cfg)})


def write_hydra_files(run_dir: Path, files: dict[str, str], *, only_if_new: bool = False) -> None:
    """``.hydra/<name>`` for each (name, text): the composed config, overrides and Hydra's own config.
    ``only_if_new``: only into a directory without them (a run that fails before training still records what
    it was; an existing run's files change only once training starts)."""
    if only_if_new and (run_dir / ".hydra" / "config.yaml").exists():
        return
    for name, text in files.items():
        records.atomic_write_text(run_dir / ".hydra" / name, text)
