"""Label-smoothed cross-entropy, as fairseq's ``label_smoothed_cross_entropy`` criterion.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016 (label smoothing);
fairseq ``fairseq/criterions/label_smoothed_cross_entropy.py`` of the RAdam paper's time (2019), used with
``--label-smoothing 0.1`` in the paper's IWSLT'14 runs (Liu et al., ICLR 2020, Sec. 3).

For each non-pad target position with log-probabilities ``log p(.)`` over V types and gold token y::

    nll    = -log p(y)
    smooth = -sum_v log p(v)
    loss   = (1 - epsilon) * nll + (epsilon / V) * smooth

i.e. the cross-entropy against the target distribution (1 - epsilon) one_hot(y) + epsilon / V. Both are
summed over the batch's non-pad target tokens (the loop divides by their number, ``sample_size``). Newer
fairseq (>= 0.10.2) spreads epsilon over V - 1 types, ``(1 - epsilon - epsilon/(V-1)) nll +
epsilon/(V-1) smooth``; the difference is O(epsilon / V). The paper-era formula is used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                                 ignore_index: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_sum, nll_sum) over non-``ignore_index`` targets; logits (B, T, V), target (B, T); maths in at
    least fp32."""
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree; logits "
                         "must be (B, T, V) for a (B, T) target")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon={epsilon} must be in [0, 1)")
    # at least float32 (half/bfloat16 logits are promoted, float64 stays float64)
    lprobs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # (B, T, V)
    keep = target.ne(ignore_index)  # (B, T)
    nll = -lprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    smooth = -lprobs.sum(-1)  # (B, T)
    nll_sum = nll.masked_fill(~keep, 0.0).sum()
    smooth_sum = smooth.masked_fill(~keep, 0.0).sum()
    loss_sum = (1.0 - epsilon) * nll_sum + (epsilon / lprobs.size(-1)) * smooth_sum
    return loss_sum, nll_sum
