"""Point 4 of issue 13: our ``--max-tokens`` batching (experiments/nmt/batching.py) against fairseq's.

fairseq-train's batches of one epoch come from ``task.get_batch_iterator``: ``ordered_indices`` (a seeded
permutation, then a stable sort by target and then source length), ``batch_by_size`` (its Cython
``batch_by_size_vec``) with ``--required-batch-size-multiple 8`` (the translation default), then the batch
order shuffled. Ours is the same up to the multiple-of-8 rule: on the same sorted order fairseq's
``batch_by_size`` with multiple 1 gives exactly our batches; with 8 it closes batches at a multiple of 8
sentences (or fewer than 8), which makes more, slightly smaller batches (measured below on the Ding
training set at --max-tokens 600 and 4000), and fairseq 0.12's batch_by_size_vec leaves out the last few
(longest) pairs of the sorted order.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.nmt.batching import token_batches
from tests.equivalence.fairseq_env import fairseq_cfg, language_pair_dataset, pytestmark  # noqa: F401


def stats(batches, src, tgt) -> dict[str, float]:
    """Batches per epoch, mean target tokens per batch, padding fraction of the collated src + tgt tensors."""
    real = sum(int(src[b].sum() + tgt[b].sum()) for b in batches)
    cells = sum(len(b) * int(src[b].max() + tgt[b].max()) for b in batches)
    return {"batches": len(batches), "tgt_tokens_per_batch": float(np.mean([tgt[b].sum() for b in batches])),
            "sentences_per_batch": float(np.mean([len(b) for b in batches])), "padding": 1 - real / cells}


@pytest.fixture(scope="module")
def train_lengths(ding_task):
    data = ding_task.split("train")
    return data.src.lengths.numpy(), data.tgt.lengths.numpy()


def fairseq_epoch_batches(ding_task, max_tokens: int, multiple: int, epoch: int = 1) -> list[np.ndarray]:
    """fairseq-train's batches of an epoch (before its batch-order shuffle), from its own iterator."""
    from fairseq import tasks

    task = tasks.setup_task(fairseq_cfg(ding_task.data_dir, "--max-tokens", str(max_tokens)).task)
    dataset = language_pair_dataset(ding_task, "train", task)
    iterator = task.get_batch_iterator(dataset, max_tokens=max_tokens, max_positions=(1024, 1024),
                                       ignore_invalid_inputs=True, required_batch_size_multiple=multiple, seed=1,
                                       epoch=epoch)
    return [np.asarray(b) for b in iterator.frozen_batches]


@pytest.mark.parametrize("max_tokens", [600, 4000])
def test_same_batches_as_fairseq_with_multiple_1(ding_task, train_lengths, max_tokens):
    """Same greedy rule: on our length-sorted order, fairseq's batch_by_size makes exactly our batches."""
    from fairseq.data import data_utils

    src, tgt = train_lengths
    ours = token_batches(src, tgt, max_tokens, shuffle=False)
    order = np.concatenate(ours)
    theirs = data_utils.batch_by_size(order, None, num_tokens_vec=np.maximum(src, tgt)[order],
                                      max_tokens=max_tokens, required_batch_size_multiple=1)
    assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    # fairseq's own epoch pipeline (its permutation, its sort) at multiple 1: the same batch statistics
    fs_epoch = fairseq_epoch_batches(ding_task, max_tokens, 1)
    ours_epoch = token_batches(src, tgt, max_tokens, seed=1, epoch=1)
    a, b = stats(fs_epoch, src, tgt), stats(ours_epoch, src, tgt)
    print(f"max_tokens {max_tokens}, multiple 1: fairseq {a}, ours {b}")
    assert sorted(np.concatenate(fs_epoch).tolist()) == list(range(len(src)))
    assert abs(a["batches"] - b["batches"]) <= 0.002 * b["batches"] + 1  # only ties ordered differently


@pytest.mark.parametrize("max_tokens", [600, 4000])
def test_fairseq_multiple_of_8(ding_task, train_lengths, max_tokens):
    """fairseq's default multiple of 8: more, smaller batches at 600 tokens (11% more updates per epoch), the
    same count at 4000; and its batch_by_size_vec leaves out the last few pairs of the sorted order (the
    longest ones: 3 at 600 tokens, 2 at 4000) from every epoch. Ours keeps every pair."""
    src, tgt = train_lengths
    batches = fairseq_epoch_batches(ding_task, max_tokens, 8)
    fs = stats(batches, src, tgt)
    ours = stats(token_batches(src, tgt, max_tokens, seed=1, epoch=1), src, tgt)
    missing = sorted(set(range(len(src))) - set(np.concatenate(batches).tolist()))
    print(f"max_tokens {max_tokens}: fairseq (multiple 8) {fs}; ours {ours}; updates/epoch x "
          f"{fs['batches'] / ours['batches']:.4f}; pairs fairseq leaves out: {len(missing)}")
    assert fs["batches"] >= ours["batches"] and fs["sentences_per_batch"] <= ours["sentences_per_batch"]
    assert all(len(b) % 8 == 0 or len(b) < 8 for b in batches)
    if max_tokens == 600:
        assert fs["batches"] > 1.05 * ours["batches"]
    longest = np.lexsort((tgt, src))[-len(missing) - 8:] if missing else []
    assert len(missing) < 8 and set(missing) <= set(longest)
