"""Read run records: the contract of the harness (docs/harness.md), shared by every figure and table script.

Scripts read run directories, never the loop's objects:

    from scripts.runs import find_runs
    for run in find_runs(["multiruns/2026-11-28_12-00-00"]):
        run.task, run.optimizer, run.status, run.seed          # from summary.json
        run.config["optimizer"]["lr"]                           # config_resolved.yaml (a plain dict)*
        run.events("train")                                     # metrics.jsonl lines of one split
        run.histograms()                                        # grad_histograms.jsonl lines

*A run that failed before training (bad data or config) has no config_resolved.yaml; its config is then Hydra's
composed .hydra/config.yaml (interpolations such as ${seed} left as strings), so tables can still place it.
A run directory is any folder with a summary.json; a sweep directory holds several. Non-finite numbers,
written as the strings "nan" / "inf" / "-inf", come back as floats; a trailing half-written line is skipped.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of ``path`` (missing file: []), with "nan"/"inf" strings as floats."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: the writer's next resume truncates it
            continue
        events.append({k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in event.items()})
    return events


@dataclass
class Run:
    """One run directory and its records."""

    dir: Path
    summary: dict
    config: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.summary["task"]

    @property
    def optimizer(self) -> str:
        return self.summary["optimizer"]

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def seed(self) -> int:
        return self.summary["seed"]

    @functools.cached_property
    def _events(self) -> list[dict]:  # metrics.jsonl is read once per Run, however often a script asks
        return read_jsonl(self.dir / "metrics.jsonl")

    @functools.cached_property
    def _histograms(self) -> list[dict]:
        return read_jsonl(self.dir / "grad_histograms.jsonl")

    def events(self, split: str | None = None) -> list[dict]:
        return [dict(e) for e in self._events if split is None or e.get("split") == split]

    def histograms(self) -> list[dict]:
        return [dict(h) for h in self._histograms]


def load_run(run_dir: Path) -> Run:
    summary = json.loads((run_dir / "summary.json").read_text())
    config_path = run_dir / "config_resolved.yaml"
    if not config_path.exists():  # failed before training: what Hydra composed for it
        config_path = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    return Run(dir=run_dir, summary=summary, config=config or {})


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """All runs under ``paths`` (run or sweep directories, searched recursively), sorted by directory.

    Raises FileNotFoundError with a one-line fix when a path is missing or holds no run.
    """
    runs = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass a run or sweep directory (runs/..., multiruns/...)")
        found = sorted(p.parent for p in path.rglob("summary.json") if ".hydra" not in p.parts)
        if not found:
            raise FileNotFoundError(f"no run under {path} (no summary.json); did the sweep start?")
        runs += [load_run(d) for d in found]
    return runs


def find_runs_or_exit(paths: Iterable[str | Path]) -> list[Run]:
    """``find_runs`` for a script's main(): a missing path or run prints ``error: ...`` to stderr and exits 1."""
    try:
        return find_runs(paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
