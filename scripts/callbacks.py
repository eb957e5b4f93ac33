"""A Hydra callback that draws a figure when a sweep ends.

An experiment file adds it under ``hydra.callbacks``; after the last job of ``python run.py -m ...`` it runs
``python <script> <sweep dir> [args...]`` in a subprocess (the script only reads the run records, so the same
command redraws the figure later by hand)::

    hydra:
      callbacks:
        draw:
          _target_: scripts.callbacks.DrawAfterSweep
          script: scripts/fig_warmup_study.py
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


class DrawAfterSweep(Callback):
    def __init__(self, script: str, args: list[str] | None = None) -> None:
        self.script = REPO / script
        self.args = [str(a) for a in (args or [])]

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        command = [sys.executable, str(self.script), str(sweep_dir), *self.args]
        log.info("drawing: %s", " ".join(command))
        done = subprocess.run(command, cwd=REPO)
        if done.returncode != 0:  # the runs are safe on disk; the figure can be redrawn with the same command
            log.error("figure script failed (exit %d); rerun: %s", done.returncode, " ".join(command))
