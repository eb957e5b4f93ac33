"""Train one configuration of the RAdam reproduction (or a sweep of them with -m). See docs/harness.md.

    python run.py --help                                                 # groups and choices
    python run.py task=ding optimizer=radam trainer.max_updates=200      # one run -> runs/ding/radam/...
    python run.py --cfg job optimizer=radam task=iwslt                   # print the composed config
    python run.py -m optimizer=adam_vanilla,adam_warmup,adam_2k,adam_eps,radam optimizer.lr=1e-4,3e-4
    python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu experiment=warmup_study
    torchrun --nproc_per_node 2 run.py trainer=gpu hydra.run.dir=runs/ddp   # one run on 2 GPUs

Rerunning with the same ``hydra.run.dir`` resumes from its checkpoints/last.pt.
Exit status: 0 for completed, diverged and preempted runs; 1 for a failed run, after one line "error: ..." on
stderr and summary.json with status "failed". In a sweep (-m) a failed run is recorded and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments import records
from experiments.loop import REPO, train
from experiments.task import UserError, first_line


def record_failure(run_dir: Path, choices: dict[str, str], seed: int, message: str) -> None:
    """Mark the run failed in summary.json, keeping whatever the summary already held."""
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 writes records
    path = run_dir / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
    else:
        summary = {**choices, **records.provenance(seed, "", REPO)}
    summary.update(status="failed", error=message)
    records.write_json(path, summary)


def check_choices(argv: list[str], config_dir: Path = REPO / "configs") -> None:
    """Exit with one line naming the valid choices if ``group=choice`` (or ``group=a,b`` in a sweep) names a
    config file that does not exist; Hydra's own message for this spans a dozen lines."""
    if any(arg.startswith("hydra.searchpath") for arg in argv):
        return  # more config directories: leave the check to Hydra
    for arg in argv:
        group, sep, value = arg.partition("=")
        if not sep or group.startswith(("-", "+", "~", "hydra/")) or not (config_dir / group).is_dir() or "$" in value:
            continue
        valid = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in valid and choice != "null" and not choice.startswith(("glob(", "choice(", "range(")):
                print(f"error: {group}={choice} is not a config in configs/{group}/; choose one of: {', '.join(valid)}",
                      file=sys.stderr)
                sys.exit(1)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    choices = {"task": hc.runtime.choices.get("task"), "optimizer": hc.runtime.choices.get("optimizer")}
    try:
        summary = train(cfg, run_dir, choices)
    except UserError as e:
        message = first_line(e)
        print(f"error: {message}", file=sys.stderr)
        record_failure(run_dir, choices, cfg.seed, message)
        if hc.mode == RunMode.MULTIRUN:
            return "failed"  # the other runs of the sweep go on; summary.json says what went wrong
        sys.exit(1)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            record_failure(run_dir, choices, cfg.seed, f"{type(e).__name__}: {e}")
        raise
    return summary["status"]


if __name__ == "__main__":
    check_choices(sys.argv[1:])
    main()
