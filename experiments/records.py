"""Run records: the files a run directory holds, written so that a kill never leaves half a file.

Layout of one run directory (see docs/harness.md, which the figure scripts rely on)::

    .hydra/                  config.yaml (as composed), overrides.yaml, hydra.yaml      (run.py, for Hydra)
    fingerprint.json         the config the directory belongs to (experiments/rundir.py)
    .lock                    advisory lock of the process running it (experiments/rundir.py)
    config_resolved.yaml     the config with every interpolation resolved
    metrics.jsonl            one JSON object per event: {"update", "epoch", "split", <metrics>...}
    grad_histograms.jsonl    |gradient| histograms at trainer.grad_histogram_updates (experiments/histograms.py)
    summary.json             task, optimizer, status, final/best metrics, updates, wall time, provenance
    checkpoints/             last.pt, best.pt, epoch<N>.pt (the last K epochs)

Atomicity: ``summary.json`` and checkpoints are written to a temporary file in the same directory, flushed,
fsync'ed and moved over the old file with ``os.replace`` (atomic on POSIX). A JSONL event is one ``os.write``
of one complete line on an ``O_APPEND`` descriptor; a reader ignores a trailing line without a newline, and a
resumed run truncates the file to the number of lines its checkpoint had seen.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator


class RecordsError(Exception):
    """A run's record files disagree with its checkpoint (e.g. metrics.jsonl shortened by hand)."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings "nan", "inf", "-inf" (a diverged run keeps its last loss)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)``, fsync it, then ``os.replace(tmp, path)``: the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), default=_json_default, indent=2, allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """All complete events of a JSONL file (a trailing partial line, if any, is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in _complete_lines(path.read_bytes())]


def _complete_lines(data: bytes) -> Iterator[bytes]:
    lines = data.split(b"\n")
    yield from (line for line in lines[:-1] if line.strip())  # the last piece has no newline: partial or empty


class JsonlWriter:
    """Appends one event per line; ``lines`` counts complete lines so a checkpoint can record it."""

    def __init__(self, path: Path, keep_lines: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.lines = 0
        if not enabled:
            return
        if keep_lines is None:  # a fresh run
            self.path.unlink(missing_ok=True)
        else:  # resume: keep exactly the events the checkpoint had seen
            self._truncate(keep_lines)
        self.lines = keep_lines or 0

    def _truncate(self, keep_lines: int) -> None:
        lines = list(_complete_lines(self.path.read_bytes())) if self.path.exists() else []
        if len(lines) < keep_lines:
            raise RecordsError(f"{self.path} has {len(lines)} events but its checkpoint saw {keep_lines}")
        atomic_write(self.path, lambda tmp: tmp.write_bytes(b"".join(line + b"\n" for line in lines[:keep_lines])))

    def write(self, event: dict) -> None:
        if not self.enabled:
            return
        line = (dumps(event) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one whole line
        finally:
            os.close(fd)
        self.lines += 1


# ----------------------------------------------------------------------------------------------- provenance

def git_info(repo: Path) -> dict[str, Any]:
    """{"sha": ..., "dirty": bool} of the checkout the code runs from, or nulls outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    import torch  # its own string names the build (e.g. 2.4.1+cu121)

    import radam  # the library's own version (the code imported, whichever distribution installed it)

    versions.update(torch=torch.__version__, cuda=torch.version.cuda, radam=radam.__version__)
    for name, dist in (("numpy", "numpy"), ("hydra", "hydra-core"), ("omegaconf", "omegaconf"),
                       ("radam_repro", "radam-repro")):
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. the harness run from a checkout without pip install -e .
            versions[name] = None
    return versions


def provenance(seed: int, device: str, repo: Path) -> dict[str, Any]:
    return {
        "seed": seed,
        "device": device,
        "git": git_info(repo),
        "versions": package_versions(),
        "hostname": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
