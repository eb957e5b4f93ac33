"""Truncated back-propagation through time over a token stream (the classic ``batchify``), shard by shard.

A stream of N tokens is cut into ``rows`` contiguous pieces of L + 1 tokens that overlap by one, row j =
tokens[j L : (j+1) L + 1] with L = (N - 1) // rows, so the targets of the rows are tokens 1 .. rows L without a
gap (a training shard's last N - 1 - rows L tokens are left out). Batch k holds columns [k T, k T + n) of every
row as input and the next token of each as target, n = min(T, L - k T)::

    input  (rows, n) = rows[:, kT : kT + n]        target (rows, n) = rows[:, kT + 1 : kT + 1 + n]

so row j of batch k + 1 continues row j of batch k, and the LSTM state of row j is carried from one batch to
the next (detached: gradients flow back at most T steps). Training (``train_batches``): the shards in an order
drawn from (seed, epoch), each batchified on its own into ``batch_size`` rows, so only one shard is in memory;
row j of the first batch of a shard continues the state of row j of the previous shard's last batch (the
sentences of One Billion Word are shuffled, so a boundary is like any sentence boundary). The state is reset
at the first batch of every epoch (``reset``). With W processes, rank r takes rows [r B/W, (r+1) B/W):
the W ranks together see exactly the batches of one process. Evaluation (``eval_batches``): ``</s>`` followed by
the held-out stream, in ``batch_size`` rows from a zero state, then the left-over tail as one more row (from a
zero state), so that every held-out token is scored exactly once, the first one after ``</s>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

Batch = dict[str, torch.Tensor]


def batchify(tokens: np.ndarray, rows: int) -> np.ndarray:
    """(rows, L + 1) view of ``tokens``, L = (len - 1) // rows: row j = tokens[j L : (j+1) L + 1]."""
    length = (len(tokens) - 1) // rows
    if length < 1:
        return np.zeros((rows, 0), dtype=tokens.dtype)
    return np.lib.stride_tricks.sliding_window_view(tokens, length + 1)[::length][:rows]


def spans(row_length: int, bptt: int) -> list[tuple[int, int]]:
    """(start, n) of the batches over a row of ``row_length`` tokens (n inputs, n targets each)."""
    return [(start, min(bptt, row_length - 1 - start)) for start in range(0, max(row_length - 1, 0), bptt)]


def make_batch(rows: np.ndarray, start: int, n: int, reset: bool) -> Batch:
    return {"input": torch.tensor(rows[:, start:start + n], dtype=torch.long),             # (B, n)
            "target": torch.tensor(rows[:, start + 1:start + 1 + n], dtype=torch.long),    # (B, n)
            "reset": torch.tensor(reset)}


def batches_per_shard(tokens: int, batch_size: int, bptt: int) -> int:
    length = (tokens - 1) // batch_size
    return len(spans(length + 1, bptt)) if length >= 1 else 0


def updates_per_epoch(shard_tokens: Sequence[int], batch_size: int, bptt: int, update_freq: int) -> int:
    """Optimizer updates per epoch: the loop groups ``update_freq`` batches (the last group may be smaller)."""
    batches = sum(batches_per_shard(n, batch_size, bptt) for n in shard_tokens)
    return math.ceil(batches / update_freq)


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_shards)


def train_batches(shards: Sequence[Path], batch_size: int, bptt: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1) -> Iterator[Batch]:
    """This rank's batches of ``epoch``: every shard in the (seed, epoch) order, one shard in memory at a time."""
    block = batch_size // world_size
    first = True
    for k in shard_order(len(shards), seed, epoch):
        rows = batchify(np.load(shards[k]), batch_size)[rank * block:(rank + 1) * block]  # (B/W, L)
        for start, n in spans(rows.shape[1], bptt):
            yield make_batch(rows, start, n, reset=first)
            first = False


def eval_batches(tokens: np.ndarray, eos: int, batch_size: int, bptt: int) -> Iterator[Batch]:
    """Every token of ``tokens`` scored once: ``</s>`` + tokens in ``batch_size`` rows, then the tail as one row."""
    stream = np.concatenate([np.array([eos], dtype=tokens.dtype), tokens])
    rows = batchify(stream, batch_size)  # (B, L + 1)
    for i, (start, n) in enumerate(spans(rows.shape[1], bptt)):
        yield make_batch(rows, start, n, reset=i == 0)
    scored = rows.shape[0] * (rows.shape[1] - 1)
    tail = stream[scored:]  # the last row's last target is the tail's first input
    for i, (start, n) in enumerate(spans(len(tail), bptt)):
        yield make_batch(tail[None, :], start, n, reset=i == 0)
