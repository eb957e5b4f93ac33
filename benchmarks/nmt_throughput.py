"""Training throughput (target tokens/s) of the NMT Transformer presets on synthetic token batches.

One update = forward, label-smoothed cross-entropy (epsilon 0.1), backward, AdamW step, on a batch of
``max_tokens // length`` sentence pairs of ``length`` tokens each (fairseq's max_tokens counts the padded
length times the batch size). Vocabulary sizes are the IWSLT'14 de-en dictionaries (8848 / 6632) for the
IWSLT and CPU presets and a joint 32k dictionary for the WMT preset.

    .venv/bin/python benchmarks/nmt_throughput.py --threads 1 --presets cpu iwslt
    .venv/bin/python -m benchmarks.nmt_throughput --threads 2 --max-tokens 4000 --steps 5
    .venv/bin/python -m benchmarks.nmt_throughput --device cuda --max-tokens 4000 --steps 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

if __package__ in (None, ""):  # run as a file (python benchmarks/nmt_throughput.py): import from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.nmt.loss import label_smoothed_cross_entropy  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
VOCABS = {"iwslt": (8848, 6632), "cpu": (8848, 6632), "wmt": (32768, 32768)}
PAD, EOS = 1, 2


def synthetic_batch(vocab: tuple[int, int], max_tokens: int, length: int, device: str):
    batch = max(max_tokens // length, 1)
    src = torch.randint(4, vocab[0], (batch, length), device=device)
    tgt = torch.randint(4, vocab[1], (batch, length), device=device)
    src[:, -1], tgt[:, -1] = EOS, EOS
    prev = torch.cat([torch.full_like(tgt[:, :1], EOS), tgt[:, :-1]], dim=1)
    return src, torch.full((batch,), length, device=device), prev, tgt


def measure(preset: str, max_tokens: int, length: int, steps: int, device: str, pre_ln: bool) -> dict:
    cfg = OmegaConf.load(CONFIGS / f"transformer_{preset}.yaml")
    cfg.pre_ln = pre_ln
    torch.manual_seed(0)
    model = instantiate(cfg)(src_vocab_size=VOCABS[preset][0], tgt_vocab_size=VOCABS[preset][1], pad_idx=PAD)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    src, lengths, prev, tgt = synthetic_batch(VOCABS[preset], max_tokens, length, device)

    def update():
        loss, _ = label_smoothed_cross_entropy(model(src, lengths, prev), tgt, 0.1, ignore_index=PAD)
        optimizer.zero_grad(set_to_none=True)
        (loss / tgt.numel()).backward()
        optimizer.step()

    update()  # warm-up: allocations, AdamW state
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        update()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"preset": preset + ("+pre_ln" if pre_ln else ""), "params": sum(p.numel() for p in model.parameters()),
            "batch": tuple(tgt.shape), "s_per_update": seconds, "tgt_tok_per_s": tgt.numel() / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "iwslt", "wmt"], choices=sorted(VOCABS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    parser.add_argument("--max-tokens", type=int, default=4000, help="tokens per batch (fairseq max_tokens)")
    parser.add_argument("--length", type=int, default=25, help="tokens per sentence (IWSLT'14 BPE mean ~ 25)")
    parser.add_argument("--steps", type=int, default=3, help="timed updates after one warm-up update")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pre-ln", action="store_true", help="measure the pre-LN variant instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}, max_tokens {args.max_tokens}, "
          f"length {args.length}")
    print(f"{'preset':<14}{'params':>12}{'batch':>12}{'s/update':>10}{'tgt tok/s':>11}")
    for preset in args.presets:
        r = measure(preset, args.max_tokens, args.length, args.steps, args.device, args.pre_ln)
        print(f"{r['preset']:<14}{r['params']:>12,}{str(r['batch']):>12}{r['s_per_update']:>10.3f}"
              f"{r['tgt_tok_per_s']:>11,.0f}")


if __name__ == "__main__":
    main()
