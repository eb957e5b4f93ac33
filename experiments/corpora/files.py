"""Data-file helpers shared by the tasks' preparation code: checksums, option hashes, the prepare lock, the
stage manifest and resumable downloads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from experiments.records import atomic_write_text
from experiments.task import DataError

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def options_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def prepare_lock(directory: Path):
    """Hold ``<directory>/.prepare.lock`` (one preparing process at a time, e.g. across distributed ranks)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".prepare.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download(urls: Sequence[str], dest: Path, hint: str) -> None:
    """Download to ``dest`` from the first URL that works; resume a partial ``dest.part``; atomic rename.
    On failure a DataError ending in ``hint`` (what the user can do instead)."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            have = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            with urllib.request.urlopen(request, timeout=60) as response:
                resumed = response.status == 206
                total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
                with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                    desc=f"download {dest.name}", disable=None,
                ) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
            os.replace(part, dest)
            log.info("downloaded %s from %s", dest, url)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and part.exists():  # range not satisfiable: the partial file is already complete
                os.replace(part, dest)
                return
            errors.append(f"{url}: {e}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
    raise DataError(f"{dest.name} not found and not downloadable ({'; '.join(errors) or 'no URL given'}); {hint}")


def verify_checksum(path: Path, expected: str | None, setting: str = "task.sha256") -> str:
    """sha256 of ``path``; a DataError if ``expected`` (the value of ``setting``) is set and differs."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        raise DataError(f"checksum mismatch for {path}: it has sha256 {actual}, expected {setting}={expected}; "
                        f"delete it and download it again, or fix {setting} (null accepts any file)")
    log.info("%s sha256 %s%s", path.name, actual, "" if expected else f" (recorded; set {setting} to pin it)")
    return actual


class Manifest:
    """``manifest.json`` of a prepared data folder: {stage: {"hash", "done", "files", "stats"}}, rewritten
    atomically after every change. A stage is done when it was recorded done under the same key (a hash of
    its inputs and options) and every file it listed (relative to the folder) still exists; a stage recorded
    not done under the same key was started and may resume."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.path = self.dir / "manifest.json"
        self.stages = json.loads(self.path.read_text()) if self.path.exists() else {}

    def done(self, stage: str, key: str) -> bool:
        entry = self.stages.get(stage, {})
        return (entry.get("hash") == key and entry.get("done", True)
                and all((self.dir / f).exists() for f in entry.get("files", [])))

    def started(self, stage: str, key: str) -> bool:
        return self.stages.get(stage, {}).get("hash") == key

    def record(self, stage: str, key: str, *, done: bool = True, files: Sequence[str] = (),
               stats: dict | None = None) -> None:
        self.stages[stage] = {"hash": key, "done": done, "files": list(files), "stats": stats or {}}
        atomic_write_text(self.path, json.dumps(self.stages, indent=1, sort_keys=True))
