"""The One Billion Word pipeline (experiments/lm/data.py, batching.py, ding.py) on small files in the real layout."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from experiments.corpora import files
from experiments.lm import batching, data
from experiments.lm.ding import SPLIT_FILES, write_ding_layout
from experiments.task import DataError
from tests.conftest import DING_FILE
from tests.lm_fixtures import HELDOUT_FILES, TRAIN_FILES, layout_files, write_archive, write_layout


def prepared(tmp_path, unk_max_count=3):
    layout = data.find_layout(write_layout(tmp_path / "text"), HELDOUT_FILES[1], HELDOUT_FILES[0])
    return layout, data.prepare(layout, tmp_path / "out", unk_max_count)


def test_vocabulary_maps_words_seen_at_most_three_times_to_unk():
    counts = collections.Counter("a a a a b b b b b c c c d".split())
    vocab = data.build_vocab(counts, sentences=7, unk_max_count=3)
    # c (3x) and d (1x) fold into <unk>; ties in alphabetical order
    assert vocab == [("</s>", 7), ("b", 5), ("<unk>", 4), ("a", 4)]


def test_prepare_encodes_every_sentence_with_an_end_token(tmp_path):
    layout, stats = prepared(tmp_path)
    files = layout_files()
    index = data.load_vocab(tmp_path / "out" / "vocab.txt")
    counts = collections.Counter(w for rel, text in files.items() if "training" in rel for w in text.split())
    assert set(index) == {w for w, c in counts.items() if c > 3} | {"</s>", "<unk>"}
    for name, n_tokens in zip(TRAIN_FILES, stats["shard_tokens"]):
        lines = files[f"{data.TRAIN_DIR}/{name}"].splitlines()
        tokens = np.load(tmp_path / "out" / "train" / f"{name}.npy")
        assert tokens.dtype == np.int32 and len(tokens) == n_tokens == sum(len(s.split()) + 1 for s in lines)
        first = lines[0].split()
        assert tokens[:len(first) + 1].tolist() == [index.get(w, index["<unk>"]) for w in first] + [index["</s>"]]
    assert stats["test_file"] == HELDOUT_FILES[0] and stats["valid_file"] == HELDOUT_FILES[1]
    test = np.load(tmp_path / "out" / "test.npy")
    assert len(test) == sum(len(s.split()) + 1 for s in files[f"{data.HELDOUT_DIR}/{HELDOUT_FILES[0]}"].splitlines())
    # idempotent: a second prepare rewrites nothing; another unk threshold redoes vocabulary and tokens
    mtime = (tmp_path / "out" / "train" / f"{TRAIN_FILES[0]}.npy").stat().st_mtime_ns
    assert data.prepare(layout, tmp_path / "out", 3) == stats
    assert (tmp_path / "out" / "train" / f"{TRAIN_FILES[0]}.npy").stat().st_mtime_ns == mtime
    assert data.prepare(layout, tmp_path / "out", 0)["vocab_size"] > stats["vocab_size"]


def test_archive_is_checked_extracted_and_its_checksum_recorded(tmp_path):
    archive = write_archive(tmp_path / "dl" / data.ARCHIVE_NAME)
    digest = files.file_sha256(archive)
    assert files.verify_checksum(archive, digest) == digest
    with pytest.raises(DataError, match=f"has sha256 {digest} but task.sha256=0+ \\(moved aside to "
                                        f"{data.ARCHIVE_NAME}.rejected-{digest[:12]}\\)"):
        files.verify_checksum(archive, "0" * 64)
    assert not archive.exists() and archive.with_name(f"{data.ARCHIVE_NAME}.rejected-{digest[:12]}").exists()
    archive = write_archive(tmp_path / "dl" / data.ARCHIVE_NAME)
    root = data.extract_layout(archive, tmp_path / "data")
    layout = data.find_layout(root, None, None)
    assert [p.name for p in layout.train] == TRAIN_FILES and layout.test.name == HELDOUT_FILES[0]
    assert not (root / "README").exists()  # only the two text folders are extracted
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="cannot extract"):
        data.extract_layout(broken, tmp_path / "data2")


def test_missing_layout_or_heldout_file_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="does not hold training-monolingual"):
        data.find_layout(tmp_path, None, None)
    write_layout(tmp_path)
    with pytest.raises(DataError, match="task.valid_file: .* is missing"):
        data.find_layout(tmp_path, "news.en.heldout-00007-of-00050", None)


def test_batches_continue_each_row_and_ranks_take_disjoint_row_blocks(tmp_path):
    layout, stats = prepared(tmp_path)
    shards = [data.shard_file(tmp_path / "out", p) for p in layout.train]
    one = list(batching.train_batches(shards, 8, 5, seed=1, epoch=2))
    assert len(one) == batching.updates_per_epoch(stats["shard_tokens"], 8, 5, update_freq=1)
    assert batching.updates_per_epoch(stats["shard_tokens"], 8, 5, update_freq=2) == (len(one) + 1) // 2
    assert [bool(b["reset"]) for b in one] == [True] + [False] * (len(one) - 1)
    for a, b in zip(one, one[1:]):
        if a["input"].shape[1] == 5 and b["input"][0, 0] == a["target"][0, -1]:  # same shard: rows continue
            assert (b["input"][:, 0] == a["target"][:, -1]).all()
    order = batching.shard_order(len(shards), seed=1, epoch=2)
    first_shard = np.load(shards[order[0]])
    rows = batching.batchify(first_shard, 8)
    assert one[0]["input"].tolist() == rows[:, :5].tolist() and one[0]["target"].tolist() == rows[:, 1:6].tolist()
    ranks = [list(batching.train_batches(shards, 8, 5, 1, 2, rank=r, world_size=2)) for r in range(2)]
    for k, full in enumerate(one):
        for key in ("input", "target"):
            assert full[key].tolist() == ranks[0][k][key].tolist() + ranks[1][k][key].tolist()
    orders = {tuple(batching.shard_order(20, seed=1, epoch=e)) for e in range(1, 4)}
    assert len(orders) == 3 and tuple(batching.shard_order(20, 1, 1)) in orders  # by (seed, epoch), repeatable


@pytest.mark.parametrize("rows,bptt", [(4, 5), (7, 3), (1, 20), (50, 4)])
def test_evaluation_scores_every_token_once(rows, bptt):
    tokens = np.arange(1, 104, dtype=np.int32)
    batches = list(batching.eval_batches(tokens, eos=0, batch_size=rows, bptt=bptt))
    targets = sorted(t for b in batches for t in b["target"].flatten().tolist())
    assert targets == tokens.tolist()
    for b in batches:  # every target follows its input token in the stream (</s> = 0 before the first)
        assert ((b["target"] - b["input"]) == 1).all()


def test_ding_corpus_in_the_1bw_layout(tmp_path):
    if not DING_FILE.exists():
        pytest.skip(f"{DING_FILE} is missing (Debian package trans-de-en)")
    counts = write_ding_layout(DING_FILE, tmp_path, train_shards=3)
    layout = data.find_layout(tmp_path, SPLIT_FILES["valid"], SPLIT_FILES["test"])
    assert len(layout.train) == 3 and counts["train"] > 10 * counts["test"] > 0
    lines = {split: set(path.read_text().splitlines()) for split, path in
             (("train", layout.train[0]), ("valid", layout.valid), ("test", layout.test))}
    assert not lines["train"] & lines["test"] and not lines["valid"] & lines["test"]
    assert any(" n't" in s or " 's" in s for s in lines["train"])  # Moses-tokenized English, case kept
    assert any(s[0].isupper() for s in lines["test"])
