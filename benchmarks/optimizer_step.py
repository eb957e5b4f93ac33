"""Time one optimizer step at 1M, 10M and 50M parameters and compare with torch's fused AdamW.

    .venv/bin/python benchmarks/optimizer_step.py                       # CPU, sizes 1,10,50 (millions)
    .venv/bin/python benchmarks/optimizer_step.py --threads 1 --repeats 15
    .venv/bin/python benchmarks/optimizer_step.py --device cuda --repeats 50

Each size is laid out two ways: as 1024x1024 tensors ("large") and as many 64x64 tensors ("small", where the
per-tensor Python overhead shows). The optimizers share the parameters and gradients (each keeps its own m, v)
and are timed interleaved in one process, one step each per round, after warm-up steps that take RAdam past its
un-rectified phase (t > 6), so the steady-state step is what is measured:

    radam.RAdam               this package, foreach=None (fused-kernel path), lr*wd = 1e-5
    radam.Adam                this package, foreach=None
    radam.RAdam foreach       this package, foreach=True (decay summed with the step, one rounding)
    radam.RAdam lr*wd=3e-8    foreach=None at the paper's NMT lr*wd: float32 leaves the kernel (see _kernels.py)
    torch RAdam foreach       torch.optim.RAdam(foreach=True, decoupled_weight_decay=True)
    torch AdamW fused         torch.optim.AdamW(fused=True)         (the reference for the ratios)
    loop (original style)     a per-parameter Python loop of tensor ops, as the original radam.py steps
    radam.RAdam compiled      torch.compile(opt.step) of radam.RAdam (the tensor-mode step)
    torch RAdam compiled      torch.compile(opt.step) of torch.optim.RAdam(decoupled_weight_decay=True)

The compiled rows are measured only where a layout has at most --compile-max-tensors tensors (inductor's
compile time grows with the number of tensors; the 50M/small layout has 12k).

An optimizer step is memory-bound: it reads p, g, m, v and writes p, m, v, i.e. 7 * 4 bytes per fp32
parameter. The achieved GB/s is printed beside two bandwidths of the same machine measured in the same run on a
256 MiB tensor: copy (dst.copy_(src)) and in-place read-modify-write (x.mul_(c)); see bandwidth_gbs. Sizes
whose working set fits in the last-level cache (1M: 28 MB) can exceed both.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from radam.adam import Adam  # noqa: E402
from radam.radam import RAdam  # noqa: E402

BYTES_PER_PARAM = 7 * 4  # fp32: read p, g, m, v; write p, m, v
WARMUP_STEPS = 8
LR, WD = 1e-3, 1e-2


class OriginalStyleLoopRAdam(torch.optim.Optimizer):
    """RAdam as the original code steps it: one Python iteration and several tensor ops per parameter
    (weight decay decoupled, threshold 5, SGD-momentum before rectification). Used only as a speed baseline."""

    def __init__(self, params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                rho_inf = 2 / (1 - b2) - 1
                rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
                if group["weight_decay"] != 0:
                    p.add_(p, alpha=-group["weight_decay"] * group["lr"])
                if rho >= 5:
                    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                    step_size = group["lr"] * r * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                    p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                else:
                    p.add_(m, alpha=-group["lr"] / (1 - b1 ** t))


OPTIMIZERS = {
    "radam.RAdam": lambda ps: RAdam(ps, lr=LR, weight_decay=WD),
    "radam.Adam": lambda ps: Adam(ps, lr=LR, weight_decay=WD),
    "radam.RAdam foreach": lambda ps: RAdam(ps, lr=LR, weight_decay=WD, foreach=True),
    "radam.RAdam lr*wd=3e-8": lambda ps: RAdam(ps, lr=LR, weight_decay=3e-8 / LR),
    "torch RAdam foreach": lambda ps: torch.optim.RAdam(ps, lr=LR, weight_decay=WD, decoupled_weight_decay=True,
                                                        foreach=True),
    "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, fused=True),
    "loop (original style)": lambda ps: OriginalStyleLoopRAdam(ps),
}
COMPILED = {
    "radam.RAdam compiled": lambda ps: RAdam(ps, lr=LR, weight_decay=WD),
    "torch RAdam compiled": lambda ps: torch.optim.RAdam(ps, lr=LR, weight_decay=WD, decoupled_weight_decay=True),
}
REFERENCE = "torch AdamW fused"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_params(n_params: int, layout: str, device: torch.device) -> list[torch.nn.Parameter]:
    """n_params fp32 parameters as 1024x1024 tensors (large) or 64x64 tensors (small), gradients attached."""
    side = 1024 if layout == "large" else 64
    n_tensors = max(1, round(n_params / side ** 2))
    params = []
    for _ in range(n_tensors):
        p = torch.nn.Parameter(torch.randn(side, side, device=device) * 0.02)
        p.grad = torch.randn(side, side, device=device) * 1e-3
        params.append(p)
    return params


def bandwidth_gbs(device: torch.device, repeats: int) -> tuple[float, float]:
    """Median GB/s on a 256 MiB fp32 tensor of (a) dst.copy_(src) and (b) the in-place x.mul_(c), both counted
    as bytes read + bytes written. (a) is the usual copy bandwidth; on CPUs with write-allocate caches it
    under-counts the traffic (dst is also read), so (b), a read-modify-write like the optimizer step's p, m, v,
    is the fairer ceiling for the % column."""
    src = torch.randn(64 * 2 ** 20, device=device)
    dst = torch.empty_like(src)
    results = []
    for op in (lambda: dst.copy_(src), lambda: src.mul_(0.999)):
        op()
        times = []
        for _ in range(max(5, repeats)):
            sync(device)
            start = time.perf_counter()
            op()
            sync(device)
            times.append(time.perf_counter() - start)
        results.append(2 * src.numel() * 4 / statistics.median(times) / 1e9)
    return results[0], results[1]


def time_steps(params, device: torch.device, repeats: int, compiled: bool) -> dict[str, list[float]]:
    """Interleaved timing: per round, one step of each optimizer. Returns seconds per step, by optimizer.
    Compiled steps are compiled during the warm-up steps (which therefore take long the first time)."""
    steps = {name: make(params).step for name, make in OPTIMIZERS.items()}
    if compiled:
        torch._dynamo.reset()
        steps.update({name: torch.compile(make(params).step) for name, make in COMPILED.items()})
    for _ in range(WARMUP_STEPS):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def report(n_params: int, layout: str, n_tensors: int, times: dict[str, list[float]],
           bandwidth: tuple[float, float]) -> None:
    ref = statistics.median(times[REFERENCE])
    copy_gbs, inplace_gbs = bandwidth
    print(f"\n{n_params / 1e6:.3g}M parameters, {layout} ({n_tensors} tensors); bandwidth: copy {copy_gbs:.1f} GB/s, "
          f"in-place {inplace_gbs:.1f} GB/s")
    print(f"  {'optimizer':<24}{'median ms':>11}{'x fused AdamW':>15}{'GB/s':>8}{'% of in-place':>15}")
    for name, ts in times.items():
        med = statistics.median(ts)
        gbs = n_params * BYTES_PER_PARAM / med / 1e9
        print(f"  {name:<24}{med * 1e3:>11.2f}{med / ref:>15.2f}{gbs:>8.1f}{100 * gbs / inplace_gbs:>14.0f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 50], help="millions of parameters")
    parser.add_argument("--layouts", nargs="+", default=["large", "small"], choices=["large", "small"])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per optimizer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--compile-max-tensors", type=int, default=64,
                        help="time the compiled steps for layouts with at most this many tensors (0: never)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here; use --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"repeats {args.repeats}")
    for size in args.sizes:
        for layout in args.layouts:
            params = make_params(int(size * 1e6), layout, device)
            n_params = sum(p.numel() for p in params)
            times = time_steps(params, device, args.repeats, compiled=len(params) <= args.compile_max_tensors)
            report(n_params, layout, len(params), times, bandwidth_gbs(device, args.repeats))
            del params, times
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
