"""Where events go besides metrics.jsonl: nothing (``logger=none``) or Weights & Biases (``logger=wandb``).

metrics.jsonl is always written (experiments/records.py); a tracker only mirrors the same events. The wandb
run id is kept in ``<run dir>/wandb_id`` so a resumed run continues the same wandb run. Offline mode is
honoured through ``logger.mode: offline`` or the environment (``WANDB_MODE=offline``); offline runs land in
``<run dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf


class NoTracker:
    def log(self, event: Mapping[str, Any]) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


class WandbTracker:
    """Mirror each event as ``{split}/{metric}`` at step ``update``."""

    def __init__(self, logger_cfg: DictConfig, cfg: DictConfig, run_dir: Path, run_name: str):
        import wandb  # imported only when asked for: it is slow to import

        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            tags=list(logger_cfg.tags or []),
            group=logger_cfg.group,
            name=logger_cfg.name or run_name,
            mode=logger_cfg.mode,  # None: wandb reads WANDB_MODE
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=OmegaConf.to_container(cfg, resolve=True),
        )

    def log(self, event: Mapping[str, Any]) -> None:
        split = event.get("split", "train")
        values = {f"{split}/{k}": v for k, v in event.items()
                  if k not in ("update", "split") and isinstance(v, (int, float))}
        self.run.log(values, step=int(event["update"]))

    def finish(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=0 if status in ("completed", "diverged", "plateau", "preempted") else 1)


def build_tracker(logger_cfg: DictConfig | None, cfg: DictConfig, run_dir: Path, run_name: str,
                  enabled: bool) -> NoTracker | WandbTracker:
    if not enabled or logger_cfg is None or logger_cfg.get("kind", "none") == "none":
        return NoTracker()
    if logger_cfg.kind == "wandb":
        return WandbTracker(logger_cfg, cfg, run_dir, run_name)
    raise ValueError(f"logger.kind={logger_cfg.kind!r} is unknown; use logger=none or logger=wandb")
