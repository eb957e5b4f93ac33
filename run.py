"""Train one configuration of the RAdam reproduction (or a sweep of them with -m). See docs/harness.md.

    python run.py --help                                                 # groups and choices
    python run.py task=ding optimizer=radam trainer.max_updates=200      # one run -> runs/ding/radam/...
    python run.py --cfg job optimizer=radam task=iwslt                   # print the composed config
    python run.py -m optimizer=adam_vanilla,adam_warmup,adam_2k,adam_eps,radam optimizer.lr=1e-4,3e-4
    python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu experiment=warmup_study
    torchrun --nproc_per_node 2 run.py trainer=gpu hydra.run.dir=runs/ddp   # one run on 2 GPUs

Rerunning with the same ``hydra.run.dir`` (and the same config: experiments/rundir.py) resumes from its
checkpoints/last.pt.
Exit status: 0 for completed, diverged and preempted runs, 130 for a run stopped by SIGINT (Ctrl-C), 143 for a
sweep (basic launcher) stopped by SIGTERM, which, like SIGINT, ends the sweep after its current run; 1 for a
failed run, after one line "error: ..." on stderr and summary.json with status "failed". A run directory that
belongs to another config or another process is refused with one line and left as it was. In a sweep (-m) a
failed run is recorded and the sweep goes on.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import records
from experiments.loop import REPO, train
from experiments.rundir import RunDirError
from experiments.task import UserError, first_line


def record_failure(run_dir: Path, choices: dict[str, str], seed: int, message: str) -> None:
    """Mark the run failed in summary.json, keeping whatever the summary already held."""
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 writes records
    path = run_dir / "summary.json"
    summary = {**choices, **records.provenance(seed, "", REPO)}
    if path.exists():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):  # damaged: kept beside the new one, not overwritten
            os.replace(path, path.with_name("summary.json.damaged"))
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


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def check_run_dir(argv: list[str]) -> None:
    """``hydra.run.dir`` must be a directory we can write to (Hydra would fail with a traceback)."""
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            run_dir = Path(arg.partition("=")[2])
            if run_dir.exists() and not run_dir.is_dir():
                fail(f"hydra.run.dir={run_dir} is a file, not a directory; choose another hydra.run.dir")
            existing = next(p for p in [run_dir, *run_dir.absolute().parents] if p.exists())
            if not os.access(existing, os.W_OK | os.X_OK):
                fail(f"hydra.run.dir={run_dir}: {existing} is not writable; choose a writable hydra.run.dir")


VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun", "--info", "-i")


def check_keys(argv: list[str], config_dir: Path = REPO / "configs") -> None:
    """Compose the config once with the first value of every override, so that a misspelled key is one line
    naming the closest valid key (Hydra's own message spans several lines)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, skip = [], False
    for a in argv:  # overrides only: not Hydra's flags, nor the values of those that take one (--cfg job)
        if not skip and not a.startswith("-"):
            args.append(a)
        skip = a in VALUE_FLAGS
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # noqa: BLE001 - Hydra's grammar errors
        fail(f"cannot parse the overrides ({' '.join(str(e).split())[:200]}); write them as key=value")
    overrides = []
    for o in parsed:
        if o.key_or_group.startswith("hydra") and not o.key_or_group.startswith("hydra.searchpath"):
            continue
        if o.is_sweep_override():
            try:
                value = next(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - glob() needs the launcher's view of the groups: left to Hydra
                continue
            overrides.append(f"{o.get_key_element()}={value}")
        else:
            overrides.append(o.input_line)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose("config", overrides=overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors: one line
        text = str(e)
        key = re.search(r"full_key: (\S+)", text) or re.search(r"Could not override '([^']+)'", text)
        if key and ("not in struct" in text or "Could not override" in text):
            fail(_unknown_key_message(key.group(1), [o for o in overrides if not o.startswith(key.group(1) + "=")],
                                      config_dir))
        fail(" ".join(text.split())[:300])


def _unknown_key_message(key: str, others: list[str], config_dir: Path) -> str:
    from hydra import compose, initialize_config_dir

    parent, _, name = key.rpartition(".")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=others)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        valid = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
    except Exception:  # noqa: BLE001 - no suggestion then
        valid = []
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else \
        f"valid keys there: {', '.join(sorted(valid)[:12])}" if valid else "see python run.py --cfg job"
    return f"{key} is not a config key ({hint}); to add a new key write +{key}=..."


def hydra_files(cfg: DictConfig, hc) -> dict[str, str]:
    """What Hydra writes to <run dir>/.hydra/, written by the loop once the run directory is claimed (so that a
    refused rerun leaves the old ones as they were): config.yaml, hydra.yaml, overrides.yaml."""
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
            "overrides.yaml": OmegaConf.to_yaml(list(hc.overrides.task))}


def parallel_jobs(hc) -> int:
    """How many runs of this sweep train at once on this machine (trainer.threads=auto shares the cores among
    them): joblib's n_jobs (-1 = every core, as joblib counts), 1 for a single run, the basic launcher (one job
    after the other) and submitit (each job has its own allocation: SLURM_CPUS_PER_TASK)."""
    if hc.mode != RunMode.MULTIRUN or "joblib" not in str(hc.launcher.get("_target_", "")).lower():
        return 1
    n = hc.launcher.get("n_jobs")
    cores = os.cpu_count() or 1
    if not isinstance(n, int) or n == 0:
        return cores
    return max(1, n if n > 0 else cores + 1 + n)


def in_process_sweep(hc) -> bool:
    """True for a sweep whose runs follow one another in this process (Hydra's basic launcher). A SIGTERM sent to
    it must end the sweep: otherwise the next run would start as soon as the current one has checkpointed.
    Under submitit each run is its own SLURM job, and SIGTERM there (scancel, requeue) concerns that job only."""
    return hc.mode == RunMode.MULTIRUN and "basic_launcher" in str(hc.launcher.get("_target_", "")).lower()


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    choices = {"task": hc.runtime.choices.get("task"), "optimizer": hc.runtime.choices.get("optimizer")}
    try:
        summary = train(cfg, run_dir, choices, hydra_files=hydra_files(cfg, hc), parallel_jobs=parallel_jobs(hc))
    except UserError as e:
        message = first_line(e)
        print(f"error: {message}", file=sys.stderr)
        if not isinstance(e, RunDirError):  # a refused run directory is left exactly as it was
            record_failure(run_dir, choices, cfg.seed, message)
        if hc.mode == RunMode.MULTIRUN:
            return "failed"  # the other runs of the sweep go on; summary.json says what went wrong
        sys.exit(1)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            record_failure(run_dir, choices, cfg.seed, f"{type(e).__name__}: {e}")
        raise
    if summary.get("signal") == "SIGINT":
        sys.exit(130)  # Ctrl-C: stop here (a sweep too); the run is resumable
    if summary.get("signal") == "SIGTERM" and in_process_sweep(hc):
        print(f"stopped by SIGTERM: the sweep ends after {run_dir.name} (preempted at update {summary['updates']}); "
              "rerun the same command to resume it", file=sys.stderr)
        sys.exit(143)  # `kill <sweep>` stops the sweep, not only its current run (128 + SIGTERM, as a shell)
    return summary["status"]


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a in ("--help", "-h", "--hydra-help", "--info") or a.startswith("--info") for a in argv):
        check_choices(argv)
        check_run_dir(argv)
        check_keys(argv)
    main()
