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
docs/harness.md. A run directory with checkpoints/last.pt is resumed: the metrics after a resume equal those of
an uninterrupted run (same data order by (seed, epoch), RNG states and interval meters restored).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments import checkpoint, distributed, records
from experiments.histograms import grad_histogram
from experiments.loggers import build_tracker
from experiments.task import Task, UserError, accumulate, first_line, to_device

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("updates_per_s", "units_per_s", "wall_s")  # the only fields that differ between reruns


# ------------------------------------------------------------------------------------------------ set-up

def pick_device(name: str, d: distributed.Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
        return torch.device("cuda", d.local_rank)
    return torch.device(name)


def configure_torch(t: DictConfig, device: torch.device) -> None:
    if t.threads:
        torch.set_num_threads(int(t.threads))
    if t.precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"trainer.precision={t.precision!r} is unknown; use fp32, bf16 or fp16")
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build_optimizer(opt_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` minus ``name`` and ``scheduler`` is a partial optimizer: call it on the parameters."""
    node = {k: v for k, v in OmegaConf.to_container(opt_cfg, resolve=True).items() if k not in ("name", "scheduler")}
    tuples = {k: tuple(v) for k, v in node.items() if isinstance(v, list)}  # YAML lists -> betas=(0.9, 0.999)
    factory = _instantiate(node, "optimizer")
    try:
        return factory([p for p in model.parameters() if p.requires_grad], **tuples)
    except ValueError as e:  # torch and radam/ check their hyperparameters
        raise UserError(f"optimizer: {e} (optimizer.* in the config)") from e


def build_scheduler(opt_cfg: DictConfig, optimizer: torch.optim.Optimizer):
    node = opt_cfg.get("scheduler")
    if node is None:
        return None
    try:
        return _instantiate(node, "optimizer.scheduler")(optimizer)
    except (TypeError, ValueError) as e:
        raise UserError(f"optimizer.scheduler: {e} (optimizer.scheduler.* in the config)") from e


def _instantiate(node: Any, where: str) -> Any:
    try:
        return instantiate(node)
    except Exception as e:  # Hydra wraps import errors and bad arguments in multi-line messages
        raise UserError(f"cannot build {where} ({first_line(e)}); check the {where} config group") from e


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
            with autocast(t.precision, device):
                loss_sum, stats = task.loss(net, to_device(batch, device))
            (scaler.scale(loss_sum) if scaler else loss_sum).backward()
        accumulate(local, stats, device)
    keys = sorted(local)
    # all ranks' sums, copied to the host once per update (the step needs the global sample size)
    stats = dict(zip(keys, distributed.all_reduce_sum(torch.stack([local[k] for k in keys]), d, device)))
    if stats.get("sample_size", 0) <= 0:
        raise UserError("an update saw no samples (stats['sample_size'] == 0); check the task's batching")
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


class StopSignal:
    """SIGTERM, SIGUSR1 and the job scheduler's preemption signal set a flag; the loop checkpoints after the
    current update and ends the run with status ``preempted``.

    Under submitit (Hydra's submitit launchers) the preemption signal is SIGUSR2 (or $SUBMITIT_PREEMPT_SIGNAL):
    SLURM sends it ``signal_delay_s`` before the time limit or on preemption, and submitit's handler requeues the
    job. That handler is kept and called by ``hand_over`` once the checkpoint is written, so the requeued job
    resumes from the very update the signal arrived at (submitit then exits the process).
    """

    def __init__(self):
        self.received: int | None = None
        self.previous = {}
        self.preempt = _preempt_signal()
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {sig: signal.signal(sig, self._handle)
                             for sig in (signal.SIGTERM, signal.SIGUSR1, self.preempt)}

    def _handle(self, signum, frame) -> None:
        if self.received != self.preempt:  # SLURM's SIGTERM may follow the preemption signal: keep the latter
            self.received = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """Call the handler that was installed before ours for the preemption signal (submitit's requeue, which
        exits the process). A handler that cannot requeue raises (submitit: timed out too many times): the run
        stays resumable by hand, so that is logged, not raised."""
        handler = self.previous.get(self.received) if self.received == self.preempt else None
        if callable(handler) and handler is not signal.default_int_handler:
            try:
                handler(self.received, None)
            except Exception as e:  # noqa: BLE001 - anything but SystemExit: the requeue did not happen
                log.warning(f"the job was not requeued ({first_line(e)}); rerun it to resume")


def _preempt_signal() -> int:
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's variable and default
    return getattr(signal, "SIG" + name.upper().removeprefix("SIG"), signal.SIGUSR2)


def diverged(metrics: dict[str, float], bound: float | None) -> bool:
    loss = metrics.get("loss", math.nan)
    return not math.isfinite(loss) or (bound is not None and loss > bound)


def better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


# --------------------------------------------------------------------------------------------------- train

def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (resuming it if it holds a checkpoint); return the summary.

    ``choices`` names the task and optimizer for summary.json (run.py passes Hydra's choice names).
    """
    stop = StopSignal()
    try:
        summary = _train(cfg, Path(run_dir), choices, stop)
    finally:
        stop.restore()
    if summary["status"] == "preempted":
        stop.hand_over()  # under submitit: requeue the job (and exit); otherwise nothing
    return summary


def _train(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None, stop: StopSignal) -> dict[str, Any]:
    t = cfg.trainer
    if t.max_updates is None and t.get("max_epochs") is None:
        raise UserError("neither trainer.max_updates nor trainer.max_epochs is set; set one of them")
    d = distributed.setup("cuda" if t.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    device = pick_device(t.device, d)
    configure_torch(t, device)
    choices = choices or {"task": str(cfg.task.get("_target_")), "optimizer": str(cfg.optimizer.get("name"))}
    summary = {**choices, "status": "running", "run_dir": str(run_dir),
               **records.provenance(cfg.seed, str(device), REPO), "world_size": d.world_size}

    # Task, model, optimizer. prepare() may raise DataError before anything in run_dir is touched.
    seed_everything(cfg.seed)
    task: Task = _instantiate(cfg.task, "task")
    if not d.is_main:
        distributed.barrier(d)  # rank 0 prepares the data first, the others then find it cached
    task.prepare()
    if d.is_main:
        distributed.barrier(d)
    model = task.build_model(cfg.model).to(device)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_scheduler(cfg.optimizer, optimizer)
    scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
    if d.enabled:
        torch.manual_seed(cfg.seed + d.rank)  # dropout differs across ranks; the weights come from rank 0

    # Resume from checkpoints/last.pt if there is one.
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    p = {"update": 0, "epoch": 1, "batch_in_epoch": 0, "metrics_lines": None, "histogram_lines": None,
         "best": None, "best_update": None, "meter": None, "valid_update": None, "wall_s": 0.0,
         "last_valid": None, "last_train": None, "task": None}  # progress: what a checkpoint restores
    if last.exists():
        try:
            p.update(checkpoint.load(last, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler))
        except (RuntimeError, ValueError, KeyError, EOFError, OSError) as e:  # other model/optimizer, or damaged
            raise UserError(f"cannot resume from {last} ({first_line(e)[:200]}); rerun with the config it was written "
                            f"with, or use a new hydra.run.dir") from e
        log.info(f"resumed from {last} at update {p['update']} (epoch {p['epoch']}, batch {p['batch_in_epoch']})")
        if p["task"] is not None and hasattr(task, "load_state_dict"):
            task.load_state_dict(p["task"])  # state a task carries across batches (the LM's LSTM state)
    metrics_file = records.JsonlWriter(run_dir / "metrics.jsonl", p["metrics_lines"], enabled=d.is_main)
    hist_file = records.JsonlWriter(run_dir / "grad_histograms.jsonl", p["histogram_lines"], enabled=d.is_main)
    tracker = build_tracker(cfg.get("logger"), cfg, run_dir, run_dir.name, enabled=d.is_main)
    if d.is_main:
        records.atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        records.write_json(run_dir / "summary.json", summary)

    net = model
    if d.enabled:
        ids = None if device.index is None else [device.index]
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        net = torch.compile(net)

    def emit(event: dict) -> None:
        metrics_file.write(event)
        tracker.log(event)

    def save(path: Path) -> None:
        task_state = task.state_dict() if hasattr(task, "state_dict") else None  # every rank: it may gather
        if path == last:
            saved_last_at[0] = p["update"]
        if d.is_main:
            p["task"] = task_state
            p["metrics_lines"], p["histogram_lines"] = metrics_file.lines, hist_file.lines
            p["meter"], p["wall_s"] = meter.state(), wall()
            checkpoint.save(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, progress=p)

    saved_last_at = [None]  # the update last.pt holds (a run ending with an epoch writes it once, not twice)

    def validate() -> None:
        metrics = task.evaluate(model, "valid")
        model.train()
        emit({"update": p["update"], "epoch": p["epoch"], "split": "valid", **metrics})
        p["last_valid"], p["valid_update"] = metrics, p["update"]
        log.info(_line("valid", p, metrics))
        value = metrics.get(t.best_metric)
        if value is not None and better(value, p["best"], t.best_mode):
            p["best"], p["best_update"] = value, p["update"]
            save(ckpt_dir / "best.pt")

    def finish(status: str, extra: dict | None = None) -> dict:
        summary.update(status=status, updates=p["update"], epochs=p["epoch"], wall_time_s=wall(),
                       final={"train": p["last_train"], "valid": p["last_valid"], **(extra or {})},
                       best={"metric": t.best_metric, "mode": t.best_mode, "value": p["best"],
                             "update": p["best_update"]})
        if d.is_main:
            records.write_json(run_dir / "summary.json", summary)
        tracker.finish(status)
        distributed.teardown(d)
        return summary

    t_start, wall_before = time.perf_counter(), p["wall_s"]
    wall = lambda: wall_before + time.perf_counter() - t_start  # noqa: E731  (training time across resumes)
    meter = Meter(p["meter"])
    bar = _progress_bar(t, d, p["update"])
    model.train()

    while not _done(p, t):
        groups = update_groups(task, p["epoch"], p["batch_in_epoch"], t.update_freq, d)
        epoch_ended = True
        for group in groups:
            p["batch_in_epoch"] += len(group)
            p["update"] += 1
            u = p["update"]
            stats, gnorm, lr, hist = train_step(task, model, net, group, optimizer, scheduler, scaler, t, device,
                                                d, histogram=u in (t.grad_histogram_updates or []))
            if hist is not None:
                hist_file.write({"update": u, "epoch": p["epoch"], **hist})
            meter.add(stats, gnorm, lr)
            step_metrics = task.metrics(stats)
            if diverged(step_metrics, t.diverge_loss_above):
                p["last_train"] = {**step_metrics, "lr": lr, "gnorm": gnorm}
                emit({"update": u, "epoch": p["epoch"], "split": "train", **p["last_train"]})
                log.warning(f"diverged at update {u}: loss {step_metrics.get('loss')} "
                            f"(bound trainer.diverge_loss_above={t.diverge_loss_above})")
                return finish("diverged")
            if u % t.log_interval == 0 or u == t.max_updates:
                p["last_train"] = _log_interval(meter, task, p, emit)
                meter = Meter()
            if bar is not None:
                bar.update(1)
            if t.valid_interval_updates and u % t.valid_interval_updates == 0:
                validate()
            if t.save_interval_updates and u % t.save_interval_updates == 0:
                save(last)
            if distributed.any_rank(stop.received is not None, d, device):
                save(last)
                log.warning(f"signal received: saved {last} at update {u}; rerun with the same hydra.run.dir")
                return finish("preempted")
            if _done(p, t):
                epoch_ended = next(groups, None) is None  # max_updates may fall exactly on the epoch's end
                break
        if not epoch_ended:
            break
        if p["batch_in_epoch"] == 0:
            raise UserError(f"the task yielded no training batches in epoch {p['epoch']}; check the data")
        if t.valid_at_epoch_end:
            validate()
        if t.keep_epoch_checkpoints > 0:
            save(ckpt_dir / f"epoch{p['epoch']}.pt")
            if d.is_main:
                checkpoint.prune_epoch_checkpoints(ckpt_dir, t.keep_epoch_checkpoints)
        p["epoch"] += 1
        p["batch_in_epoch"] = 0
        save(last)

    if bar is not None:
        bar.close()
    if p["valid_update"] != p["update"]:
        validate()  # the final model is always validated
        save(last)
    elif saved_last_at[0] != p["update"]:
        save(last)
    if distributed.any_rank(stop.received is not None, d, device):  # a signal during the final validation
        log.warning(f"signal received: saved {last} at update {p['update']}; rerun to run the final evaluation")
        return finish("preempted")
    distributed.barrier(d)
    result = {}
    if d.is_main:
        result = task.finalize(model, checkpoint.epoch_checkpoints(ckpt_dir)) or {}
        if result:
            emit({"update": p["update"], "epoch": p["epoch"], "split": "test", **result})
            log.info(_line("final", p, result))
    return finish("completed", {"test": result})


def _done(p: dict, t: DictConfig) -> bool:
    return (t.max_updates is not None and p["update"] >= t.max_updates) or \
        (t.get("max_epochs") is not None and p["epoch"] > t.max_epochs)


def _log_interval(meter: Meter, task: Task, p: dict, emit) -> dict:
    seconds = max(time.perf_counter() - meter.t0, 1e-9)
    metrics = task.metrics(meter.stats)
    event = {"update": p["update"], "epoch": p["epoch"], "split": "train", **metrics,
             "lr": meter.lr, "gnorm": meter.gnorm / max(meter.updates, 1),
             "updates_per_s": meter.updates / seconds, "units_per_s": meter.stats.get("sample_size", 0) / seconds}
    emit(event)
    log.info(_line("train", p, event))
    return {k: v for k, v in event.items() if k not in ("update", "epoch", "split", *TIMING_KEYS)}


def _line(split: str, p: dict, metrics: dict) -> str:
    values = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                        if k not in ("update", "epoch", "split"))
    return f"{split} | epoch {p['epoch']} | update {p['update']} | {values}"


def _progress_bar(t: DictConfig, d: distributed.Dist, initial: int):
    import sys
    if not (d.is_main and t.progress_bar and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=t.max_updates, initial=initial, unit="upd", dynamic_ncols=True, leave=False)
