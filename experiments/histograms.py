"""Histograms of |gradient| over all parameters (paper Figs. 2-3: Adam with and without warmup).

At each update listed in ``trainer.grad_histogram_updates`` (paper: 1, 5, 10, 25, 50, 75, 100) the loop
appends one line to ``grad_histograms.jsonl``::

    {"update": 5, "epoch": 1, "edges_log10": [-12.0, 2.0], "bins": 100,
     "counts": [100 ints], "zeros": int, "underflow": int, "overflow": int, "total": int}

Bin i counts the entries with  10**(lo + i*w) <= |g| < 10**(lo + (i+1)*w),  w = (hi - lo) / bins, so the edges
are fixed and identical across runs and updates (np.logspace(lo, hi, bins + 1) rebuilds them).
``zeros`` counts exact zeros (e.g. embeddings of absent tokens, padding), ``underflow`` the non-zero entries
below 10**lo, ``overflow`` those at or above 10**hi; counts + zeros + underflow + overflow == total (the number
of gradient entries; non-finite entries are counted in overflow).
The gradient is the one the optimizer sees: summed over the accumulated batches, divided by the global sample
size (per-unit mean), before clipping.
"""

from __future__ import annotations

from typing import Iterable

import torch


def grad_histogram(grads: Iterable[torch.Tensor], lo: float = -12.0, hi: float = 2.0, bins: int = 100) -> dict:
    """Histogram of |g| over all entries of ``grads`` with log-spaced, fixed bins."""
    counts = torch.zeros(bins, dtype=torch.long)
    zeros = underflow = overflow = total = 0
    for g in grads:
        a = g.detach().abs().flatten().double().cpu()
        total += a.numel()
        nonzero = a[a != 0]
        zeros += a.numel() - nonzero.numel()
        log = torch.log10(nonzero)  # inf stays inf, nan stays nan
        index = torch.floor((log - lo) / (hi - lo) * bins)
        underflow += int((index < 0).sum())
        inside = (index >= 0) & (index < bins)
        overflow += int(nonzero.numel() - inside.sum() - (index < 0).sum())
        counts += torch.bincount(index[inside].long(), minlength=bins)
    return {"edges_log10": [lo, hi], "bins": bins, "counts": counts.tolist(), "zeros": zeros,
            "underflow": underflow, "overflow": overflow, "total": total}
