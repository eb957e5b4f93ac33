"""Data-file helpers shared by the tasks' preparation code: checksums, option hashes, the prepare lock, the
stage manifest and resumable downloads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from experiments.records import atomic_write_text
from experiments.task import DataError

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    return file_hash(path, "sha256")


def file_hash(path: Path, algorithm: str) -> str:
    """The hex digest of ``path`` by ``algorithm`` (sha256; md5 only where that is what is published)."""
    h = hashlib.new(algorithm)
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


def verify_checksum(path: Path, expected: str | None, setting: str = "task.sha256", *, algorithm: str = "sha256",
                    actual: str | None = None, move_aside: bool = True) -> str:
    """The ``algorithm`` hash of ``path`` (or ``actual``, computed by the caller). If ``expected`` (the value of
    ``setting``) is set and differs, a DataError names both hashes; a file we downloaded (``move_aside``) is
    first moved to ``<name>.rejected-<hash>``, so no later run uses it (a file the user named stays put)."""
    actual = actual or file_hash(path, algorithm)
    if expected and actual != expected.lower():
        where = ""
        if move_aside:
            aside = path.with_name(f"{path.name}.rejected-{actual[:12]}")
            os.replace(path, aside)
            where = f" (moved aside to {aside.name})"
        raise DataError(f"{path} has {algorithm} {actual} but {setting}={expected}{where}; download it again, or "
                        f"set {setting} to the file you trust (null accepts any file)")
    log.info("%s %s %s%s", path.name, algorithm, actual, "" if expected else f" (recorded; set {setting} to pin it)")
    return actual


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the destination (or make a device), or None if it is safe:
    a regular file or folder with a relative path without ``..``."""
    parts = Path(member.name).parts
    if member.name.startswith(("/", "\\")) or (parts and Path(parts[0]).drive):
        return "an absolute path"
    if ".." in parts:
        return "a '..' path"
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "a device or special file"
    return None


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract every member of the tar ``archive`` into ``dest``: each one checked first (``unsafe_member``: a
    DataError names the first bad one and nothing is extracted), then tarfile's "data" filter where Python has
    it (3.10.12+, 3.11.4+) as a second guard."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_member(member)
                if reason:
                    raise DataError(f"{archive} has a member {member.name!r} with {reason}; it is not the genuine "
                                    f"archive: delete it and download it again")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive} ({type(e).__name__}: {e}); delete it and download it again") from e


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
