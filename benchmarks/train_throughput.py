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
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    args = parser.parse_args(argv)
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
