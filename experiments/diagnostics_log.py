"""trainer.diagnostics_interval: radam.diagnostics per module every N updates, into ``diagnostics.jsonl``.

One event per measured update, ``{"update", "epoch", "modules": {module: {stat: value}}}`` with the stats of
radam.diagnostics.STATS (the maths is in radam/diagnostics.py), mirrored to the tracker as
``diagnostics/<module>/<stat>``. The file is resumed like metrics.jsonl: the checkpoint's progress keeps its line
count (Progress.diagnostics_lines) and a resume truncates the file to it, so a resumed run's file equals an
uninterrupted run's. The diagnostics read the optimizer state only: training is the same with them on or off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from experiments import records
from experiments.task import UserError
from radam.diagnostics import Diagnostics

FILE = "diagnostics.jsonl"


class DiagnosticsLog:
    """Measures every ``interval`` updates (0: never) and writes the events; ``lines`` goes into checkpoints."""

    def __init__(self, run_dir: Path, interval: int, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                 keep_lines: int | None, enabled: bool):
        self.interval = interval if enabled else 0
        self._kept = keep_lines or 0  # carried through checkpoints while the option is off
        try:  # before the file is touched: a bad optimizer leaves the run directory as it was
            self.diag = Diagnostics(optimizer, model.named_parameters()) if self.interval > 0 else None
        except (TypeError, ValueError) as e:
            raise UserError(f"trainer.diagnostics_interval: {e}; or set trainer.diagnostics_interval=0") from e
        self.file = records.JsonlWriter(Path(run_dir) / FILE, keep_lines, enabled=self.interval > 0)
        self._armed = False

    @property
    def lines(self) -> int:
        return self.file.lines if self.interval > 0 else self._kept

    def before_update(self, update: int) -> None:
        """Snapshot theta before the update's step when ``update`` is measured (forward/backward leave it)."""
        self._armed = self.interval > 0 and update % self.interval == 0
        if self._armed:
            self.diag.snapshot()

    def after_update(self, update: int, epoch: int, tracker_log: Callable[[dict], Any]) -> dict | None:
        """Measure after the step (the gradients are still set), write the event; returns it, or None."""
        if not self._armed:
            return None
        self._armed = False
        modules = self.diag.measure()
        event = {"update": update, "epoch": epoch, "modules": modules}
        self.file.write(event)
        tracker_log({"update": update, "split": "diagnostics",
                     **{f"{m}/{k}": v for m, stats in modules.items() for k, v in stats.items()}})
        return event

