"""The training loop: one loop for every task, reading top to bottom like nanoGPT's train.py.

    python run.py task=ding optimizer=radam trainer.max_updates=200          # one run
    python run.py -m optimizer=adam_vanilla,adam_warmup,radam seed=1,2,3      # a sweep (see docs/harness.md)
    torchrun --nproc_per_node 2 run.py ... hydra.run.dir=runs/x              # one run on 2 processes

The loop asks the task (experiments/task.py) for data, model, loss and metrics, and the config for optimizer
and schedule; it knows nothing task-specific. Per update it accumulates ``trainer.update_freq`` batches,
backpropagates the *summed* loss, divides the gradient by the global sample size (after DDP's all-reduce,
which averages: hence the factor world_size), clips it to ``trainer.clip_norm``, steps optimizer and schedule.
This makes 1 process with update_freq=2 and 2 processes with update_freq=1 take the same step (fairseq's rule).

Run records, checkpoints and resume are described in experiments/records.py, experiments/checkpoint.py and
docs/harness.md. A run directory belongs to one configuration (experiments/rundir.py: a fingerprint of the
config, an advisory lock); with checkpoints/last.pt it is resumed, and the metrics after a resume equal those of
an uninterrupted run (same data order by (seed, epoch), RNG states and interval meters restored).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.profiler import record_function

from experiments import checkpoint, distributed, records, rundir
from experiments.diagnostics_log import DiagnosticsLog
from experiments.histograms import grad_histogram
from experiments.loggers import build_tracker
from experiments.signals import Interrupted, StopSignal
from experiments.task import Task, UserError, accumulate, first_line, to_device
from experiments.trainer_options import check_trainer_options, divergence_bound, thread_count

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("updates_per_s", "units_per_s", "wall_s", "eta_s")  # the only fields that differ between reruns


# ------------------------------------------------------------------------------------------------ set-up

def pick_device(name: str, d: distributed.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
        return torch.device("cuda", d.local_rank)
    return torch.device(name)


def configure_torch(t: DictConfig, parallel_jobs: int = 1) -> None:
    threads = thread_count(t.threads, parallel_jobs)
    if threads:
        torch.set_num_threads(threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build_model(task: Task, model_cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    try:
        return task.build_model(model_cfg).to(device)
    except UserError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as e:  # a model config of another task
        raise UserError(f"model {model_cfg.get('_target_')} does not fit task {type(task).__name__} "
                        f"({type(e).__name__}: {first_line(e)[:160]}); choose a model= of this task") from e


def build_optimizer(opt_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` minus ``name`` and ``scheduler`` is a partial optimizer: call it on the parameters."""
    node = {k: v for k, v in OmegaConf.to_container(opt_cfg, resolve=True).items() if k not in ("name", "scheduler")}
    tuples = {k: tuple(v) for k, v in node.items() if isinstance(v, list)}  # YAML lists -> betas=(0.9, 0.999)
    factory = _instantiate(node, "optimizer")
    try:
        return factory([p for p in model.parameters() if p.requires_grad], **tuples)
    except (ValueError, TypeError) as e:  # torch and radam/ check their hyperparameters
        raise UserError(f"optimizer: {first_line(e)} (optimizer.* in the config)") from e


def build_scheduler(opt_cfg: DictConfig, optimizer: torch.optim.Optimizer):
    node = opt_cfg.get("scheduler")
    if node is None:
        return None
    try:
        return _instantiate(node, "optimizer.scheduler")(optimizer)
    except (TypeError, ValueError) as e:
        raise UserError(f"optimizer.scheduler: {first_line(e)} (optimizer.scheduler.* in the config)") from e


def _instantiate(node: Any, where: str) -> Any:
    try:
        return instantiate(node)
    except Exception as e:  # Hydra wraps the cause in "Error in call to target '...':\n<cause>"
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        cause = e.__cause__ or e
        raise UserError(f"cannot build {where} ({type(cause).__name__}: {_one_line(cause)}); check the {where} "
                        f"config group") from e


def _one_line(e: BaseException) -> str:
    """The whole message of ``e`` on one line (Hydra's messages put the useful part after a line break)."""
    return " ".join(str(e).split())[:300] or type(e).__name__


# --------------------------------------------------------------------------------------------- one update

def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def train_step(task: Task, model, net, batches, optimizer, scheduler, scaler, t: DictConfig,
               device: torch.device, d: distributed.Dist, histogram: bool) -> tuple[dict, float, float, dict | None]:
    """One update over ``batches`` (this rank's share).

    Returns (summed stats over all ranks, gradient norm before clipping, lr used, |g| histogram or None).
    """
    optimizer.zero_grad(set_to_none=True)
    local: dict[str, torch.Tensor] = {}  # float64 sums on the device: no host sync between the batches
    for i, batch in enumerate(batches):
        accumulating = d.enabled and i < len(batches) - 1  # DDP all-reduces on the last backward only
        with net.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(t.precision, device), record_function("forward"):  # (labels for torch.profiler)
                loss_sum, stats = task.loss(net, to_device(batch, device))
            with record_function("backward"):
                (scaler.scale(loss_sum) if scaler else loss_sum).backward()
        accumulate(local, stats, device)
    keys = sorted(local)
    # all ranks' sums, copied to the host once per update (the step needs the global sample size)
    stats = dict(zip(keys, distributed.all_reduce_sum(torch.stack([local[k] for k in keys]), d, device)))
    if stats.get("sample_size", 0) <= 0:
        raise UserError("an update saw no samples (stats['sample_size'] == 0); check the task's batching")
    with record_function("optimizer"):
        return _optimizer_step(model, optimizer, scheduler, scaler, stats, t, d, histogram)


def _optimizer_step(model, optimizer, scheduler, scaler, stats, t: DictConfig, d: distributed.Dist,
                    histogram: bool) -> tuple[dict, float, float, dict | None]:
    """Gradient / sample size, clipping, the optimizer's and the schedule's step."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    # sum over ranks / global sample size (DDP averaged over ranks: hence world_size)
    torch._foreach_mul_([p.grad for p in params], d.world_size / stats["sample_size"])
    hist = grad_histogram(p.grad for p in params) if histogram else None
    gnorm = torch.nn.utils.clip_grad_norm_(params, t.clip_norm if t.clip_norm > 0 else math.inf)
    lr = optimizer.param_groups[0]["lr"]
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return stats, float(gnorm), lr, hist


def update_groups(task: Task, epoch: int, skip: int, update_freq: int, d: distributed.Dist) -> Iterator[list]:
    """This rank's batches of ``epoch`` in groups of ``update_freq``, after skipping ``skip`` consumed ones."""
    batches = itertools.islice(task.train_batches(epoch, d.rank, d.world_size), skip, None)
    while group := list(itertools.islice(batches, update_freq)):
        yield group


# -------------------------------------------------------------------------------------------- bookkeeping

class Meter:
    """Sums of stats and grad norms over one log interval (saved in checkpoints so resumes log identically)."""

    def __init__(self, state: dict | None = None):
        s = state or {}
        self.stats: dict[str, float] = dict(s.get("stats", {}))
        self.gnorm, self.updates, self.lr = s.get("gnorm", 0.0), s.get("updates", 0), s.get("lr", 0.0)
        self.t0 = time.perf_counter()

    def add(self, stats: dict[str, float], gnorm: float, lr: float) -> None:
        for k, v in stats.items():
            self.stats[k] = self.stats.get(k, 0.0) + v
        self.gnorm += gnorm
        self.updates += 1
        self.lr = lr  # the lr of the interval's last update

    def state(self) -> dict:
        return {"stats": dict(self.stats), "gnorm": self.gnorm, "updates": self.updates, "lr": self.lr}


@dataclass
class Progress:
    """Where a run stands: everything a checkpoint restores besides model, optimizer, schedule and RNGs."""

    update: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0
    metrics_lines: int | None = None     # events of metrics.jsonl / grad_histograms.jsonl the checkpoint has seen
    histogram_lines: int | None = None
    diagnostics_lines: int | None = None  # events of diagnostics.jsonl (experiments/diagnostics_log.py)
    best: float | None = None            # best value of trainer.best_metric, and its update
    best_update: int | None = None
    meter: dict | None = None            # the current log interval's sums
    valid_update: int | None = None      # the update of the last validation
    wall_s: float = 0.0                  # training time across resumes
    last_valid: dict | None = None
    last_train: dict | None = None
    task: Any = None                     # state the task carries across batches (the LM's LSTM state)


@dataclass
class Run:
    """One run's objects. Built by ``start``; the functions below read and advance it."""

    cfg: DictConfig
    run_dir: Path
    d: distributed.Dist
    device: torch.device
    task: Task
    model: torch.nn.Module
    net: torch.nn.Module                 # what the forward pass calls: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    summary: dict
    p: Progress
    metrics_file: records.JsonlWriter
    hist_file: records.JsonlWriter
    diagnostics: DiagnosticsLog         # trainer.diagnostics_interval
    tracker: Any
    bound: float | None                  # training losses above it end the run as diverged
    meter: Meter = field(default_factory=Meter)
    saved_last_at: int | None = None     # the update last.pt holds
    t_start: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0
    pace: float | None = None            # recent seconds per update (eta_seconds)

    @property
    def t(self) -> DictConfig:
        return self.cfg.trainer

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def emit(self, event: dict) -> None:
        self.metrics_file.write(event)
        self.tracker.log(event)


def diverged(metrics: dict[str, float], bound: float | None) -> bool:
    loss = metrics.get("loss", math.nan)
    return not math.isfinite(loss) or (bound is not None and loss > bound)


def better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


def save(run: Run, path: Path) -> None:
    task_state = run.task.state_dict() if hasattr(run.task, "state_dict") else None  # every rank: it may gather
    p = run.p
    if path == run.last:
        run.saved_last_at = p.update
    if run.d.is_main:
        p.task = task_state
        p.metrics_lines, p.histogram_lines = run.metrics_file.lines, run.hist_file.lines
        p.diagnostics_lines = run.diagnostics.lines
        p.meter, p.wall_s = run.meter.state(), run.wall()
        checkpoint.save(path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler,
                        progress=asdict(p))


def validate(run: Run) -> None:
    p, t = run.p, run.t
    metrics = run.task.evaluate(run.model, "valid")
    run.model.train()
    run.emit({"update": p.update, "epoch": p.epoch, "split": "valid", **metrics})
    p.last_valid, p.valid_update = metrics, p.update
    log.info(_line("valid", p, metrics))
    value = metrics.get(t.best_metric)
    if value is not None and better(value, p.best, t.best_mode):
        p.best, p.best_update = value, p.update
        save(run, run.run_dir / "checkpoints" / "best.pt")


def finish(run: Run, status: str, extra: dict | None = None, stop: StopSignal | None = None) -> dict:
    p, t = run.p, run.t
    run.summary.update(status=status, updates=p.update, epochs=p.epoch, wall_time_s=run.wall(),
                       final={"train": p.last_train, "valid": p.last_valid, **(extra or {})},
                       best={"metric": t.best_metric, "mode": t.best_mode, "value": p.best, "update": p.best_update})
    if status == "preempted" and stop is not None and stop.received is not None:
        run.summary["signal"] = stop.name
    if run.d.is_main:
        records.write_json(run.run_dir / "summary.json", run.summary)
    run.tracker.finish(status)
    distributed.teardown(run.d)
    return run.summary


def stop_requested(run: Run, stop: StopSignal) -> bool:
    return distributed.any_rank(stop.received is not None, run.d, run.device)


def plateau_stop(run: Run, update: int, warning: str | None) -> bool:
    """Log the plateau warning (rank 0 measures); True if it ends the run (trainer.stop_on_plateau_warning), on
    every rank at once."""
    if warning:
        log.warning(warning)
    t = run.t
    if not t.get("stop_on_plateau_warning", False) or update % t.diagnostics_interval:
        return False
    if distributed.any_rank(warning is not None, run.d, run.device):
        run.summary["plateau_warning"] = warning
        return True
    return False


# --------------------------------------------------------------------------------------------------- train

def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None,
          hydra_files: dict[str, str] | None = None, parallel_jobs: int = 1) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (resuming it if it holds a checkpoint); return the summary.

    ``choices`` names the task and optimizer for summary.json (run.py passes Hydra's choice names);
    ``hydra_files`` (name -> text) are written to ``run_dir/.hydra/`` once the run directory is claimed;
    ``parallel_jobs``: the runs training at once on this machine, which share its cores (trainer.threads=auto).
    """
    run_dir, main = Path(run_dir), distributed.is_main_process()
    stop = StopSignal()
    try:
        with rundir.claim(run_dir, main=main):
            if main and hydra_files:
                rundir.write_hydra_files(run_dir, hydra_files, only_if_new=True)
            check_trainer_options(cfg)
            rundir.check_fingerprint(run_dir, cfg)
            summary = _train(cfg, run_dir, choices, stop, hydra_files or {}, parallel_jobs)
    finally:
        stop.restore()
    if summary["status"] == "preempted":
        stop.hand_over()  # under submitit: requeue the job (and exit); otherwise nothing
    return summary


def _train(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None, stop: StopSignal,
           hydra_files: dict[str, str], parallel_jobs: int = 1) -> dict[str, Any]:
    run = start(cfg, run_dir, choices, hydra_files, parallel_jobs)
    t, p = run.t, run.p
    bar = _progress_bar(t, run.d, p.update)
    run.model.train()
    while not _done(p, t):
        status = train_epoch(run, stop, bar)
        if status == "max_updates":
            break
        if status is not None:
            return finish(run, status, stop=stop)
        end_epoch(run)
    if bar is not None:
        bar.close()
    if p.valid_update != p.update:
        validate(run)  # the final model is always validated
        save(run, run.last)
    elif run.saved_last_at != p.update:
        save(run, run.last)
    if stop_requested(run, stop):  # a signal during the final validation
        log.warning(f"signal received: saved {run.last} at update {p.update}; rerun to run the final evaluation")
        return finish(run, "preempted", stop=stop)
    distributed.barrier(run.d)
    result = {}
    try:
        with stop.interrupting():  # a signal now stops the final evaluation at once: a resume reruns it
            if run.d.is_main:
                result = run.task.finalize(run.model, checkpoint.epoch_checkpoints(run.last.parent)) or {}
    except Interrupted:
        log.warning("signal received during the final evaluation; rerun with the same hydra.run.dir to redo it")
        return finish(run, "preempted", stop=stop)
    if result:
        run.emit({"update": p.update, "epoch": p.epoch, "split": "test", **result})
        log.info(_line("final", p, result))
    return finish(run, "completed", {"test": result})


def start(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None, hydra_files: dict[str, str],
          parallel_jobs: int = 1) -> Run:
    """Build task, model, optimizer and schedule, restore last.pt if there is one, open the run's records.
    Until the records are opened, any error leaves the run directory as it was."""
    t = cfg.trainer
    d = distributed.setup("cuda" if t.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    device = pick_device(t.device, d)
    configure_torch(t, parallel_jobs)
    choices = choices or {"task": str(cfg.task.get("_target_")), "optimizer": str(cfg.optimizer.get("name"))}
    summary = {**choices, "status": "running", "run_dir": str(run_dir),
               **records.provenance(cfg.seed, str(device), REPO), "world_size": d.world_size,
               "threads": torch.get_num_threads()}

    # Task, model, optimizer. prepare() may raise DataError before anything in run_dir is touched.
    seed_everything(cfg.seed)
    task: Task = _instantiate(cfg.task, "task")
    if not d.is_main:
        distributed.barrier(d)  # rank 0 prepares the data first, the others then find it cached
    task.prepare()
    if d.is_main:
        distributed.barrier(d)
    model = build_model(task, cfg.model, device)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
    if d.enabled:
        torch.manual_seed(cfg.seed + d.rank)  # dropout differs across ranks; the weights come from rank 0

    p = Progress()
    last = run_dir / "checkpoints" / "last.pt"
    if last.exists():
        state = checkpoint.load(last, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                trust=bool(cfg.get("trust_checkpoint", False)))
        p = Progress(**{k: v for k, v in state.items() if k in Progress.__dataclass_fields__})
        log.info(f"resumed from {last} at update {p.update} (epoch {p.epoch}, batch {p.batch_in_epoch})")
        if p.task is not None and hasattr(task, "load_state_dict"):
            task.load_state_dict(p.task)
    try:
        diag_log = DiagnosticsLog(run_dir, t.get("diagnostics_interval", 0), optimizer, model, p.diagnostics_lines,
                                  enabled=d.is_main, warn_at=t.get("plateau_warning_update"))
        metrics_file = records.JsonlWriter(run_dir / "metrics.jsonl", p.metrics_lines, enabled=d.is_main)
        hist_file = records.JsonlWriter(run_dir / "grad_histograms.jsonl", p.histogram_lines, enabled=d.is_main)
    except records.RecordsError as e:
        raise UserError(f"{e}; restore the file, or start a new hydra.run.dir") from e
    bound = divergence_bound(t.diverge_loss_above, task)
    summary["divergence_bound"] = bound
    tracker = build_tracker(cfg.get("logger"), cfg, run_dir, run_dir.name, enabled=d.is_main)
    if d.is_main:
        rundir.write_hydra_files(run_dir, hydra_files)
        rundir.write_fingerprint(run_dir, cfg)
        records.atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        records.write_json(run_dir / "summary.json", summary)

    net = model
    if d.enabled:
        ids = None if device.index is None else [device.index]
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        net = torch.compile(net)
    return Run(cfg=cfg, run_dir=run_dir, d=d, device=device, task=task, model=model, net=net, optimizer=optimizer,
               scheduler=scheduler, scaler=scaler, summary=summary, p=p, metrics_file=metrics_file,
               hist_file=hist_file, diagnostics=diag_log, tracker=tracker, bound=bound,
               meter=Meter(p.meter), wall_before=p.wall_s)


def train_epoch(run: Run, stop: StopSignal, bar) -> str | None:
    """The rest of the current epoch, one update at a time. Returns None at the epoch's end, "max_updates" if
    the run ends inside it, or the status that ends the run now ("diverged", "preempted", "plateau")."""
    t, p = run.t, run.p
    groups = update_groups(run.task, p.epoch, p.batch_in_epoch, t.update_freq, run.d)
    for group in groups:
        p.batch_in_epoch += len(group)
        p.update += 1
        u = p.update
        run.diagnostics.before_update(u)
        stats, gnorm, lr, hist = train_step(run.task, run.model, run.net, group, run.optimizer, run.scheduler,
                                            run.scaler, t, run.device, run.d,
                                            histogram=u in (t.grad_histogram_updates or []))
        if hist is not None:
            run.hist_file.write({"update": u, "epoch": p.epoch, **hist})
        event = run.diagnostics.after_update(u, p.epoch, run.tracker.log)  # diagnostics.jsonl, if on
        if plateau_stop(run, u, run.diagnostics.plateau_warning(event)):
            return "plateau"
        run.meter.add(stats, gnorm, lr)
        step_metrics = run.task.metrics(stats)
        if diverged(step_metrics, run.bound):
            p.last_train = {**step_metrics, "lr": lr, "gnorm": gnorm}
            run.emit({"update": u, "epoch": p.epoch, "split": "train", **p.last_train})
            log.warning(f"diverged at update {u}: loss {step_metrics.get('loss')} (bound {run.bound}: "
                        f"trainer.diverge_loss_above={t.diverge_loss_above})")
            return "diverged"
        if u % t.log_interval == 0 or u == t.max_updates:
            p.last_train = _log_interval(run.meter, run.task, p, run.emit, eta_seconds(run))
            run.meter = Meter()
        if bar is not None:
            bar.update(1)
        if t.valid_interval_updates and u % t.valid_interval_updates == 0:
            validate(run)
        if t.save_interval_updates and u % t.save_interval_updates == 0:
            save(run, run.last)
        if stop_requested(run, stop):
            save(run, run.last)
            log.warning(f"signal received: saved {run.last} at update {u}; rerun with the same hydra.run.dir")
            return "preempted"
        if _done(p, t):
            # max_updates may fall exactly on the epoch's end: then the epoch's end is still run
            return "max_updates" if next(groups, None) is not None else None
    if p.batch_in_epoch == 0:
        raise UserError(f"the task yielded no training batches in epoch {p.epoch}; check the data")
    return None


def end_epoch(run: Run) -> None:
    t, p = run.t, run.p
    if t.valid_at_epoch_end:
        validate(run)
    ckpt_dir = run.last.parent
    if t.keep_epoch_checkpoints > 0:
        save(run, ckpt_dir / f"epoch{p.epoch}.pt")
        if run.d.is_main:
            checkpoint.prune_epoch_checkpoints(ckpt_dir, t.keep_epoch_checkpoints)
    p.epoch += 1
    p.batch_in_epoch = 0
    save(run, run.last)


def _done(p: Progress, t: DictConfig) -> bool:
    return (t.max_updates is not None and p.update >= t.max_updates) or \
        (t.get("max_epochs") is not None and p.epoch > t.max_epochs)


def eta_seconds(run: Run) -> float | None:
    """Seconds until trainer.max_updates at the recent pace: an exponential average (weight 0.3 for the newest)
    of the log intervals' seconds per update, validations and checkpoints included, so that it follows a change
    of load within a few intervals; the task's final evaluation is not counted. None for runs bounded by
    epochs only."""
    total, meter = run.t.max_updates, run.meter
    if total is None or meter.updates == 0:
        return None
    pace = (time.perf_counter() - meter.t0) / meter.updates
    run.pace = pace if run.pace is None else 0.7 * run.pace + 0.3 * pace
    return max(total - run.p.update, 0) * run.pace


def _log_interval(meter: Meter, task: Task, p: Progress, emit, eta: float | None = None) -> dict:
    seconds = max(time.perf_counter() - meter.t0, 1e-9)
    metrics = task.metrics(meter.stats)
    event = {"update": p.update, "epoch": p.epoch, "split": "train", **metrics,
             "lr": meter.lr, "gnorm": meter.gnorm / max(meter.updates, 1),
             "updates_per_s": meter.updates / seconds, "units_per_s": meter.stats.get("sample_size", 0) / seconds}
    if eta is not None:
        event["eta_s"] = eta
    emit(event)
    log.info(_line("train", p, event))
    return {k: v for k, v in event.items() if k not in ("update", "epoch", "split", *TIMING_KEYS)}


def _line(split: str, p: Progress, metrics: dict) -> str:
    values = " | ".join(_field(k, v) for k, v in metrics.items() if k not in ("update", "epoch", "split"))
    return f"{split} | epoch {p.epoch} | update {p.update} | {values}"


def _field(key: str, value: Any) -> str:
    if key == "eta_s":  # remaining training time as h:mm:ss
        seconds = int(round(value))
        return f"eta {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"


def _progress_bar(t: DictConfig, d: distributed.Dist, initial: int):
    import sys
    if not (d.is_main and t.progress_bar and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=t.max_updates, initial=initial, unit="upd", dynamic_ncols=True, leave=False)
