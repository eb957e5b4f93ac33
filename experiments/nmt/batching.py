"""Token-count batches bucketed by length, as fairseq's ``--max-tokens`` (``batch_by_size``), and their collation.

Batching one epoch of N sentence pairs with lengths ``s_i`` / ``t_i`` (eos included):

1. order: a random permutation (seeded by (seed, epoch)), then a stable sort by (s_i, t_i) -- sentences of
   similar length end up together, ties in random order;
2. pack greedily: a batch of sentences I is padded to ``|I| * max_{i in I} max(s_i, t_i)`` tokens; a sentence
   opens a new batch when adding it would exceed ``max_tokens`` (padding included);
3. shuffle the order of the batches with the same generator;
4. shard: rank r of W takes batches r, r+W, r+2W, ...; the last ``len % W`` batches of the shuffled list are left
   out so every rank takes the same number of steps (which batches are left out changes every epoch).

A pair longer than ``max_tokens`` on its own cannot be batched: ``token_batches`` raises, the task filters
such training pairs beforehand and logs how many. Everything depends only on (seed, epoch, rank, world_size),
so a resumed run can skip the batches it has already consumed.

Collation follows fairseq's LanguagePairDataset (right padding with pad=1)::

    src_tokens          (B, S)  w1 w2 ... </s> <pad> ...
    target              (B, T)  y1 y2 ... </s> <pad> ...
    prev_output_tokens  (B, T)  </s> y1 y2 ... <pad> ...   (decoding starts from eos)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from experiments.nmt.data import ParallelSplit
from experiments.nmt.dictionary import EOS, PAD


def token_batches(src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int, *, seed: int = 0,
                  epoch: int = 0, shuffle: bool = True) -> list[np.ndarray]:
    """Indices of each batch (see the module docstring). ``shuffle=False``: sorted order, no randomness."""
    src_lengths, tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
    sizes = np.maximum(src_lengths, tgt_lengths)
    if len(sizes) and sizes.max() > max_tokens:
        raise ValueError(f"a sentence pair has {sizes.max()} tokens, more than max_tokens={max_tokens}; "
                         f"raise max_tokens or filter long pairs")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    order = order[np.lexsort((tgt_lengths[order], src_lengths[order]))]  # stable: primary src, then tgt

    batches, start, longest = [], 0, 0
    for pos, i in enumerate(order):
        longest_with_i = max(longest, sizes[i])
        if (pos - start + 1) * longest_with_i > max_tokens:
            batches.append(order[start:pos])
            start, longest_with_i = pos, sizes[i]
        longest = longest_with_i
    if start < len(order):
        batches.append(order[start:])
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def shard(batches: Sequence[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """Rank ``rank``'s share: batches rank, rank+W, ...; the remainder ``len % W`` is dropped for all ranks."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    usable = len(batches) - len(batches) % world_size
    return list(batches[rank:usable:world_size])


def _pad(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row
    return out


def collate(data: ParallelSplit, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The batch dict of sentence pairs ``indices`` (see the module docstring for the layout)."""
    src = [data.src[int(i)] for i in indices]
    tgt = [data.tgt[int(i)] for i in indices]
    src_lengths = torch.tensor([len(x) for x in src], dtype=torch.long)
    tgt_lengths = torch.tensor([len(y) for y in tgt], dtype=torch.long)
    target = _pad(tgt, int(tgt_lengths.max()))  # (B, T)
    prev = _pad([torch.cat([torch.tensor([EOS]), y[:-1]]) for y in tgt], target.shape[1])  # (B, T)
    return {
        "id": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
        "src_tokens": _pad(src, int(src_lengths.max())),  # (B, S)
        "src_lengths": src_lengths,
        "target": target,
        "prev_output_tokens": prev,
    }


class Batches(Sequence):
    """A list of batches collated on access (so skipping the first k batches after a resume costs nothing)."""

    def __init__(self, data: ParallelSplit, index_batches: list[np.ndarray]):
        self.data, self.index_batches = data, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Batches(self.data, self.index_batches[k])
        return collate(self.data, self.index_batches[k])
