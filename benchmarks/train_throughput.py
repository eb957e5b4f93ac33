"""Training throughput of the paper's workloads, and the time of a paper-length run it implies.

One update = forward + loss + backward + radam.RAdam step (its fused path), on a synthetic batch of the paper's
shape, so no data set is needed; the models, losses and on-device augmentation are the harness's own:

    workload            model (experiments/...)                batch                       paper run
    nmt-cpu             Transformer, model=transformer_cpu     4000 tokens (160 x 25)      -   (--max-tokens)
    nmt-iwslt           Transformer, model=transformer_iwslt   4000 tokens (160 x 25)      70,000 updates
    nmt-wmt             Transformer, model=transformer_wmt     4000 tokens (160 x 25)      -
    cifar-resnet20      CIFAR ResNet-20 + crop/flip on device  128 images 32x32 (uint8)    164 x 391 updates
    imagenet-resnet18   torchvision ResNet-18                  256 images 224x224          90 x 5,005 updates
    lm-1bw              2-layer LSTM 2048 + adaptive softmax   128 x 20 words, V 793,471   14 x 312,000 updates

Vocabulary sizes: IWSLT'14 de-en dictionaries (8848 / 6632), a joint 32k dictionary for WMT, One Billion Word's
793,471 words. What is not timed: reading and decoding data (ImageNet's JPEGs need enough loader workers to keep
up; CIFAR-10 and the token tasks keep their data in memory), validation and checkpoints.

    .venv/bin/python benchmarks/train_throughput.py --threads 1 --workloads nmt-cpu cifar-resnet20
    .venv/bin/python benchmarks/train_throughput.py --device cuda --precision fp32 bf16 --compile off on

``--config default`` measures the main job itself instead (``python run.py``, or ``run.py`` with the
``--override`` keys given): its composed config, real batches of its task, the loop's own ``train_step``, so
the result is the updates/s ``make run`` trains at. The cases run interleaved in one process (rounds of
``--steps`` updates, the case order rotated every round, each case with its own model and optimizer from the
same seed on the same batches) and are reported as median updates/s and as a ratio to the first, the default
(``trainer.threads=1``); the training time each implies (its max_updates at that rate) is compared with the main
job as it was before issue 17 (6+6 layers, 6000 updates), measured in the same run (``--no-previous``: left out):

    .venv/bin/python benchmarks/train_throughput.py --config default                 # threads 1 vs auto
    .venv/bin/python benchmarks/train_throughput.py --config default --candidates    # + compile, bf16
    .venv/bin/python benchmarks/train_throughput.py --config default --profile       # where the time goes
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

if __package__ in (None, ""):  # run as a file (python benchmarks/train_throughput.py): import from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.nmt.loss import label_smoothed_cross_entropy  # noqa: E402
from experiments.vision import augment  # noqa: E402
from radam import RAdam  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
PAD, EOS = 1, 2


@dataclass
class Workload:
    model: torch.nn.Module
    loss: Callable[[torch.nn.Module], torch.Tensor]   # model -> mean loss of the synthetic batch
    batch: str                                        # its shape, for the table
    units: int                                        # tokens / images / words per update
    unit: str
    paper_updates: int | None                         # updates of one paper-length run (None: not a paper run)


def model_from_config(name: str, **kwargs) -> torch.nn.Module:
    return instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))(**kwargs)


def nmt(preset: str, device: torch.device, max_tokens: int = 4000, length: int = 25) -> Workload:
    vocab = (32768, 32768) if preset == "wmt" else (8848, 6632)
    model = model_from_config(f"transformer_{preset}", src_vocab_size=vocab[0], tgt_vocab_size=vocab[1], pad_idx=PAD)
    rows = max(max_tokens // length, 1)
    src = torch.randint(4, vocab[0], (rows, length), device=device)                  # (B, S)
    tgt = torch.randint(4, vocab[1], (rows, length), device=device)                  # (B, T)
    src[:, -1], tgt[:, -1] = EOS, EOS
    prev = torch.cat([torch.full_like(tgt[:, :1], EOS), tgt[:, :-1]], dim=1)          # (B, T) shifted right
    lengths = torch.full((rows,), length, device=device)

    def loss(m):
        loss_sum, _ = label_smoothed_cross_entropy(m(src, lengths, prev), tgt, 0.1, ignore_index=PAD)
        return loss_sum / tgt.numel()
    return Workload(model, loss, f"{rows} x {length}", tgt.numel(), "tgt tok", 70_000 if preset == "iwslt" else None)


def cifar_resnet20(device: torch.device) -> Workload:
    model = model_from_config("resnet20", num_classes=10)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (128,), generator=generator).to(device)
    offsets, flips = (x.to(device) for x in augment.draw(128, generator))

    def loss(m):  # as Cifar10Task: crop + flip + normalization on the batch's device
        x = augment.normalize(augment.crop_flip(images, offsets, flips))            # (128, 3, 32, 32) float
        return torch.nn.functional.cross_entropy(m(x).float(), labels)
    return Workload(model, loss, "128 x 3x32x32", 128, "img", 164 * 391)


def imagenet_resnet18(device: torch.device) -> Workload:
    model = model_from_config("resnet18", num_classes=1000)
    x = torch.randn(256, 3, 224, 224, device=device)                                 # (256, 3, 224, 224)
    labels = torch.randint(0, 1000, (256,), device=device)
    return Workload(model, lambda m: torch.nn.functional.cross_entropy(m(x).float(), labels), "256 x 3x224x224",
                    256, "img", 90 * 5005)


def lm_1bw(device: torch.device, vocab: int = 793_471) -> Workload:
    model = model_from_config("lstm_lm", vocab_size=vocab)
    # Zipf-like word ids (frequent words are most of the text), so the adaptive softmax's clusters see the
    # share of a batch they see on real text
    ranks = torch.distributions.Pareto(torch.tensor(1.0), torch.tensor(1.0)).sample((128, 21)).long() - 1
    words = ranks.clamp(max=vocab - 1).to(device)                                    # (128, 21)
    inputs, targets = words[:, :-1], words[:, 1:]                                    # (128, 20) each

    def loss(m):
        nll, _ = m(inputs, targets)
        return nll / targets.numel()
    return Workload(model, loss, "128 x 20", targets.numel(), "word", 14 * 312_000)


WORKLOADS = ("nmt-cpu", "nmt-iwslt", "nmt-wmt", "cifar-resnet20", "imagenet-resnet18", "lm-1bw")


def build(name: str, device: torch.device, max_tokens: int) -> Workload:
    if name.startswith("nmt-"):
        return nmt(name.removeprefix("nmt-"), device, max_tokens)
    return {"cifar-resnet20": cifar_resnet20, "imagenet-resnet18": imagenet_resnet18, "lm-1bw": lm_1bw}[name](device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, device: torch.device, precision: str, compiled: bool, steps: int, warmup: int,
            max_tokens: int = 4000) -> dict:
    torch.manual_seed(0)
    w = build(name, device, max_tokens)
    model = w.model.to(device).train()
    if compiled:
        torch._dynamo.reset()  # each measurement compiles afresh (and stays under dynamo's recompile limit)
    net = torch.compile(model) if compiled else model
    optimizer = RAdam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = w.loss(net)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    for _ in range(warmup):  # allocations, optimizer state, compilation, RAdam's un-rectified steps
        update()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        update()
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    hours = w.paper_updates * seconds / 3600 if w.paper_updates else None
    return {"workload": name, "precision": precision, "compiled": compiled,
            "params": sum(p.numel() for p in model.parameters()), "batch": w.batch, "s_per_update": seconds,
            "units_per_s": w.units / seconds, "unit": w.unit, "paper_updates": w.paper_updates, "paper_hours": hours}


# --------------------------------------------------------------------- the main job (--config default)

REPO = Path(__file__).resolve().parents[1]
CASES = {"threads 1 (default)": ["trainer.threads=1"], "threads auto": ["trainer.threads=auto"]}
# The main job before issue 17 (up to commit ba01e3f): model 6+6 layers, lr 1e-3, 6000 updates, one thread. Its
# "training (min)" against a case's is the speed-up of the job itself, measured in the same run.
PREVIOUS = {"before: 6+6, 6000 updates": ["model=transformer_cpu", "optimizer.lr=1e-3", "trainer.max_updates=6000",
                                          "trainer.threads=1"]}
CANDIDATES = {"auto + compile": ["trainer.threads=auto", "trainer.compile=true"],
              "auto + bf16": ["trainer.threads=auto", "trainer.precision=bf16"]}
PHASES = ("batching", "forward", "backward", "optimizer")  # the record_function labels (experiments/loop.py)


@dataclass
class JobCase:
    """One setting of the main job: its own model, optimizer and stream of the task's real batches."""

    name: str
    cfg: Any
    threads: int
    step: Callable[[list], Any]
    batches: Iterator[list]
    times: list[float]


def compose_job(config: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="config" if config == "default" else config, overrides=overrides)


def job_case(name: str, cfg, task, d) -> JobCase:
    from experiments import loop
    from experiments.trainer_options import thread_count
    t, device = cfg.trainer, torch.device("cpu")
    loop.seed_everything(cfg.seed)
    model = loop.build_model(task, cfg.model, device).train()
    optimizer = loop.build_optimizer(cfg.optimizer, model)
    scheduler = loop.build_scheduler(cfg.optimizer, optimizer)
    scaler = torch.amp.GradScaler("cpu") if t.precision == "fp16" else None
    net = torch.compile(model) if t.compile else model

    def batches():
        for epoch in itertools.count(1):
            yield from loop.update_groups(task, epoch, 0, t.update_freq, d)

    def step(group):
        return loop.train_step(task, model, net, group, optimizer, scheduler, scaler, t, device, d, False)

    return JobCase(name, cfg, thread_count(t.threads) or torch.get_num_threads(), step, batches(), [])


def one_update(c: JobCase) -> float:
    start = time.perf_counter()
    with torch.profiler.record_function("batching"):
        group = next(c.batches)
    c.step(group)
    return time.perf_counter() - start


def profile_case(c: JobCase, updates: int) -> None:
    """Where one update's time goes: the loop's phases (their self time is Python and framework overhead
    around the ops) and the ops that take the most time, from torch.profiler over ``updates`` updates."""
    torch.set_num_threads(c.threads)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(updates):
            one_update(c)
        wall = (time.perf_counter() - start) / updates * 1e3
    events = {e.key: e for e in prof.key_averages()}
    print(f"\n{c.name}: {wall:.1f} ms per update under the profiler ({updates} updates; unprofiled: "
          f"{statistics.median(c.times) * 1e3:.1f} ms)")
    print(f"{'phase':<12}{'ms/update':>10}{'%':>6}{'in ops':>9}{'Python+dispatch':>17}")
    total = 0.0
    for name in PHASES:
        e = events.get(name)
        if e is None:
            continue
        ms, own = e.cpu_time_total / 1e3 / updates, e.self_cpu_time_total / 1e3 / updates
        total += ms
        print(f"{name:<12}{ms:>10.1f}{100 * ms / wall:>6.0f}{ms - own:>9.1f}{own:>17.1f}")
    print(f"{'rest':<12}{wall - total:>10.1f}{100 * (wall - total) / wall:>6.0f}   (sync of the stats, loop code)")
    ops = sorted((e for e in events.values() if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    print(f"{'op (self time)':<44}{'ms/update':>10}{'%':>6}{'calls/update':>14}")
    for e in ops[:12]:
        ms = e.self_cpu_time_total / 1e3 / updates
        print(f"{e.key[:43]:<44}{ms:>10.2f}{100 * ms / wall:>6.1f}{e.count / updates:>14.0f}")


def main_job(args) -> None:
    from experiments import distributed, loop
    cases = {**CASES, **(CANDIDATES if args.candidates else {}), **({} if args.no_previous else PREVIOUS)}
    base = compose_job(args.config, args.override)
    torch.use_deterministic_algorithms(bool(base.trainer.deterministic), warn_only=True)
    loop.seed_everything(base.seed)
    task = loop._instantiate(base.task, "task")
    task.prepare()
    d = distributed.setup("cpu")
    jobs = [job_case(name, compose_job(args.config, [*args.override, *extra]), task, d)
            for name, extra in cases.items()]
    isa = {k: v for k, v in os.environ.items() if k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                                          "MKL_ENABLE_INSTRUCTIONS")}
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()} "
          f"({torch.backends.cpu.get_cpu_capability()}), {len(os.sched_getaffinity(0))} cores; "
          f"{' '.join(f'{k}={v}' for k, v in isa.items()) or 'no ISA limits'}; main job {args.config} "
          f"{' '.join(args.override)}: max_updates {base.trainer.max_updates}")
    for c in jobs:  # allocations, optimizer state, RAdam's un-rectified steps, compilation
        torch.set_num_threads(c.threads)
        for _ in range(args.warmup * (5 if c.cfg.trainer.compile else 1)):
            one_update(c)
    for r in range(args.rounds):
        for c in jobs[r % len(jobs):] + jobs[: r % len(jobs)]:
            torch.set_num_threads(c.threads)
            c.times += [one_update(c) for _ in range(args.steps)]
    print(f"median of {args.rounds} interleaved rounds x {args.steps} updates per case, after {args.warmup} "
          "(x5 compiled) warm-up updates")
    print(f"{'case':<26}{'threads':>8}{'updates/s':>11}{'IQR':>15}{'ratio':>7}{'updates':>8}{'training (min)':>16}"
          f"{'vs before':>11}")
    rates = {c.name: 1 / statistics.median(c.times) for c in jobs}
    minutes = {c.name: (c.cfg.trainer.max_updates or float("nan")) / rates[c.name] / 60 for c in jobs}
    before = minutes.get(next(iter(PREVIOUS)), float("nan"))
    for c in jobs:
        q1, _, q3 = statistics.quantiles(c.times, n=4)
        print(f"{c.name:<26}{c.threads:>8}{rates[c.name]:>11.2f}{f'{1 / q3:.2f}-{1 / q1:.2f}':>15}"
              f"{rates[c.name] / rates[jobs[0].name]:>6.2f}x{c.cfg.trainer.max_updates or '-':>8}"
              f"{minutes[c.name]:>16.1f}{before / minutes[c.name]:>10.2f}x")
    if args.profile:
        for c in jobs[:2]:
            profile_case(c, args.profile_updates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    parser.add_argument("--steps", type=int, default=10, help="timed updates (the median is reported)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed updates first (>= 6: RAdam rectified)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--max-tokens", type=int, default=4000, help="NMT: tokens per batch (fairseq max_tokens)")
    parser.add_argument("--config", help="the main job instead of synthetic workloads: 'default' = python run.py")
    parser.add_argument("--override", nargs="*", default=[], help="with --config: run.py overrides, key=value")
    parser.add_argument("--rounds", type=int, default=8, help="with --config: interleaved rounds of --steps")
    parser.add_argument("--no-previous", action="store_true",
                        help="with --config: leave out the main job as it was before issue 17 (6+6, 6000 updates)")
    parser.add_argument("--candidates", action="store_true", help="with --config: also compile and bf16")
    parser.add_argument("--profile", action="store_true", help="with --config: torch.profiler phase/op tables")
    parser.add_argument("--profile-updates", type=int, default=20)
    args = parser.parse_args(argv)
    if args.config:
        return main_job(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}; median of {args.steps} updates after {args.warmup}")
    print(f"{'workload':<19}{'prec':>5}{'compile':>8}{'params':>13}{'batch':>17}{'s/update':>10}"
          f"{'units/s':>15}{'paper run (h)':>14}")
    for workload, precision, compiled in itertools.product(args.workloads, args.precision, args.compile):
        r = measure(workload, device, precision, compiled == "on", args.steps, args.warmup, args.max_tokens)
        hours = f"{r['paper_hours']:.1f}" if r["paper_hours"] is not None else "-"
        print(f"{workload:<19}{precision:>5}{compiled:>8}{r['params']:>13,}{r['batch']:>17}{r['s_per_update']:>10.4f}"
              f"{r['units_per_s']:>11,.0f} {r['unit']:<4}{hours:>13}", flush=True)
        del r
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
