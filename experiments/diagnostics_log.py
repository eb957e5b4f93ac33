"""trainer.diagnostics_interval: radam.diagnostics per module every N updates, into ``diagnostics.jsonl``.

One event per measured update, ``{"update", "epoch", "modules": {module: {stat: value}}}`` with the stats of
radam.diagnostics.STATS (the maths is in radam/diagnostics.py), mirrored to the tracker as
``diagnostics/<module>/<stat>``. The file is resumed like metrics.jsonl: the checkpoint's progress keeps its line
count (Progress.diagnostics_lines) and a resume truncates the file to it, so a resumed run's file equals an
uninterrupted run's. The diagnostics read the optimizer state only: training is the same with them on or off.

Plateau warning (trainer.plateau_warning_update = U): at the first measured update >= U the rule below is
checked once; when it fires the loop logs one warning line naming the remedies, and with
trainer.stop_on_plateau_warning=true ends the run with status ``plateau``. The rule is Fig. 2's signal: a run
heading for the unigram plateau has its gradients collapse, so

    fires  <=>  median over modules of grad_small_frac (the fraction of |g_i| < eps) >= SMALL_GRAD_FRACTION

PROVISIONAL calibration (2026-12-01, Ding warmup study at lr 2e-3, seed 1, first 100 updates): the median was
0.27 (U = 50) and 0.31 (U = 100) for Adam-vanilla (ends on the plateau, valid ppl 2210), 0.000 for RAdam and
Adam-warmup (both train, ppl 104 / 98). Held-out (results/plateau_heldout.md, not retuned): on Es->En Bible
verses at lr 2e-3 it fired on both plateau runs from update 15 and on none of the training runs; on Ding at
lr 1e-3 it missed both plateau runs (median 0.7-2% at U <= 100) and had no false positive.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from experiments import records
from experiments.task import UserError
from radam.diagnostics import Diagnostics

FILE = "diagnostics.jsonl"
SMALL_GRAD_FRACTION = 0.05  # see the module docstring (provisional)
REMEDY = "use RAdam (optimizer=radam) or a learning-rate warmup (optimizer=adam_warmup)"


class DiagnosticsLog:
    """Measures every ``interval`` updates (0: never) and writes the events; ``lines`` goes into checkpoints."""

    def __init__(self, run_dir: Path, interval: int, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                 keep_lines: int | None, enabled: bool, warn_at: int | None = None):
        self.interval = interval if enabled else 0
        self.warn_at = warn_at
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

    def plateau_warning(self, event: dict | None) -> str | None:
        """The warning line if ``event`` is the first measured update at or after trainer.plateau_warning_update
        and the rule fires (see the module docstring); None otherwise. Stateless, so a resume checks the same
        update."""
        if event is None or self.warn_at is None or not (event["update"] - self.interval < self.warn_at
                                                         <= event["update"]):
            return None
        median, fires = plateau_rule(event["modules"])
        if not fires:
            return None
        return (f"plateau warning at update {event['update']}: the median module has "
                f"{median:.0%} of its gradient entries below eps (Fig. 2's collapse); this run "
                f"is likely to stay on the unigram plateau: {REMEDY}")


def plateau_rule(modules: dict[str, dict]) -> tuple[float | None, bool]:
    """(median over modules of grad_small_frac, whether the rule fires) for one event's ``modules``; the median is
    None (and the rule silent) when no module has a gradient. The one definition of the rule: the loop's warning
    and scripts/plateau_heldout.py's hit-rate table both call it."""
    fractions = [s["grad_small_frac"] for s in modules.values() if s.get("grad_small_frac") is not None
                 and not math.isnan(s["grad_small_frac"])]
    if not fractions:
        return None, False
    median = statistics.median(fractions)
    return median, median >= SMALL_GRAD_FRACTION
