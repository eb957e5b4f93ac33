"""Cost of one radam.diagnostics call (snapshot() + measure()) against an optimizer step and a training update.

    .venv/bin/python benchmarks/diagnostics_cost.py                      # 1 thread, 15 rounds
    .venv/bin/python benchmarks/diagnostics_cost.py --threads 2 --repeats 30 --max-coords 16384

Workload: the warmup study's model (configs/model/transformer_cpu.yaml: post-LN 6+6 x d_model 128, FFN 256,
with the IWSLT'14 dictionary sizes 8848 / 6632: 4.8M parameters), radam.RAdam, a batch of 20 x 30 random
tokens (600 target tokens, task=ding's max_tokens). Diagnostics per module (model.named_parameters(), as
trainer.diagnostics_interval does). Each round times, interleaved in one process: one optimizer step, one
training update (zero_grad, forward, backward, step), and one diagnostics call. The ratios are of the medians
over the rounds; "amortized" divides the call by 10 steps (one call every 10 updates).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from experiments.nmt.model import TransformerModel  # noqa: E402
from radam import RAdam  # noqa: E402
from radam.diagnostics import Diagnostics  # noqa: E402

SRC_VOCAB, TGT_VOCAB, BATCH, LENGTH = 8848, 6632, 20, 30


def build(max_coords: int):
    torch.manual_seed(0)
    model = TransformerModel(SRC_VOCAB, TGT_VOCAB, encoder_layers=6, decoder_layers=6, embed_dim=128, ffn_dim=256,
                             heads=4, dropout=0.1)
    opt = RAdam(model.parameters(), lr=1e-3)
    diag = Diagnostics(opt, model.named_parameters(), max_coords=max_coords)
    src = torch.randint(4, SRC_VOCAB, (BATCH, LENGTH))
    prev, tgt = torch.randint(4, TGT_VOCAB, (BATCH, LENGTH)), torch.randint(4, TGT_VOCAB, (BATCH, LENGTH))

    def update():
        opt.zero_grad(set_to_none=True)
        logits = model(src, None, prev)
        torch.nn.functional.cross_entropy(logits.reshape(-1, TGT_VOCAB), tgt.reshape(-1)).backward()
        opt.step()

    def call():
        diag.snapshot()
        diag.measure()

    return model, opt, diag, update, call


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--max-coords", type=int, default=1024, help="Diagnostics(max_coords=...)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, opt, diag, update, call = build(args.max_coords)
    for _ in range(8):  # past RAdam's un-rectified steps: the fused steady-state step is timed
        update()
    call()
    steps, updates, calls = [], [], []
    for _ in range(args.repeats):
        steps.append(timed(opt.step))
        updates.append(timed(update))
        calls.append(timed(call))
    step, upd, cost = (statistics.median(x) for x in (steps, updates, calls))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"transformer_cpu: {n_params / 1e6:.2f}M parameters, {len(diag.keys)} keys (modules), "
          f"max_coords {args.max_coords}, {args.threads} thread(s), {args.repeats} rounds (medians)")
    print(f"optimizer step     {step * 1e3:8.2f} ms")
    print(f"training update    {upd * 1e3:8.2f} ms")
    print(f"diagnostics call   {cost * 1e3:8.2f} ms   = {cost / step:.2f} x step, {cost / upd:.3f} x update")
    print(f"every 10 updates:  {cost / (10 * step):.1%} of the steps' time, {cost / (10 * upd):.2%} of the updates'")


if __name__ == "__main__":
    main()
