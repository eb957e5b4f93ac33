"""NMT data: IWSLT'14 recipe on a real-format archive, the Ding parser, raw corpora, dictionaries, batching."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.nmt import data as nmt_data
from experiments.nmt.batching import collate, shard, token_batches
from experiments.nmt.data import (ParallelSplit, RawTextCorpus, TokenArray, clean_corpus, load_split,
                                  prepare_corpus, read_lines)
from experiments.nmt.dictionary import Dictionary
from experiments.nmt.ding import DingCorpus, parse_ding, split_of
from experiments.nmt.iwslt import TEST_SETS, IwsltCorpus, xml_segments
from experiments.task import DataError
from tests.nmt_fixtures import (iwslt_test_segments, iwslt_train_lines, write_ding_file, write_iwslt_archive,
                                write_raw_corpus)

REAL_DING = Path("/usr/share/trans/de-en")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(e: Exception) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# ---- dictionary ---------------------------------------------------------------------------------------------------
def test_dictionary_follows_fairseq_conventions(tmp_path):
    d = Dictionary.build(["b a c a", "a b </s> d"])
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.symbols[4:8] == ["a", "b", "c", "d"]  # a:3, b:2, then c, d tied at 1: alphabetical
    assert len(d) == 8 and (d.bos, d.pad, d.eos, d.unk) == (0, 1, 2, 3)
    d9 = Dictionary.build([" ".join(f"w{i}" for i in range(5))])
    assert len(d9) == 16 and d9.symbols[-1] == "madeupword0006"
    assert d.encode_line("a zz d").tolist() == [4, 3, 7, 2]
    assert d.string([0, 4, 3, 7, 2, 1]) == "a <unk> d"
    assert d.string([4, 3], escape_unk=True) == "a <<unk>>"
    d.save(tmp_path / "dict.txt")
    assert (tmp_path / "dict.txt").read_text().splitlines()[:2] == ["a 3", "b 2"]
    assert Dictionary.load(tmp_path / "dict.txt") == d


def test_clean_corpus_applies_length_and_ratio_limits():
    src = ["a b c", "", "a " * 176, "a b c d", "a", "x  y   z"]
    tgt = ["a b c", "a", "a " * 176, "a", "a b", "x y"]
    kept_src, kept_tgt = clean_corpus(src, tgt)
    # kept: equal lengths; "a" vs "a b" (ratio 2 > 1.5) dropped; "x y z" vs "x y" (1.5, not > 1.5) kept
    assert kept_src == ["a b c", "x y z"] and kept_tgt == ["a b c", "x y"]


# ---- IWSLT'14 -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iwslt_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("iwslt")
    archive = write_iwslt_archive(root / "download")
    data_dir = root / "data"
    corpus = IwsltCorpus(data_dir, archive=str(archive), sha256=sha256(archive), urls=[])
    manifest = prepare_corpus(data_dir, corpus, bpe_merges=60)
    return data_dir, archive, manifest


def expected_cleaned_train_en(n_talks: int = 3, per_talk: int = 30) -> list[str]:
    """The recipe's output for the fixture, written out by hand: per talk the kept tag lines (<speaker> is not in
    the recipe's grep list; <title>/<description> lose their tags), then the sentences minus the two that
    clean-corpus-n drops (j = 5: ratio, j = 7: length), tokenized and lower-cased."""
    raw = iwslt_train_lines(n_talks, per_talk)["en"]
    out = []
    for t in range(n_talks):
        out += [f"&lt; speaker &gt; speaker {t} &lt; / speaker &gt;", f"speaker {t} : a talk about houses",
                "ted talk subtitles and transcript : a story ."]
        sentences = raw[t * (per_talk + 6) + 6:(t + 1) * (per_talk + 6)]
        out += [line[:-1].lower() + " ." for j, line in enumerate(sentences) if j not in (5, 7)]
    return out


def test_iwslt_recipe_on_real_format_archive(iwslt_prepared):
    data_dir, _, manifest = iwslt_prepared
    cleaned = expected_cleaned_train_en()
    valid = read_lines(data_dir / "tok/valid.en")
    train = read_lines(data_dir / "tok/train.en")
    assert valid == cleaned[22::23]  # every 23rd line (23, 46, ...) of the cleaned train
    assert train == [line for i, line in enumerate(cleaned, 1) if i % 23]
    assert len(read_lines(data_dir / "tok/train.de")) == len(train)
    assert len(read_lines(data_dir / "tok/valid.de")) == len(valid)
    # test = the seg lines of the five sets in the recipe's order, ’ -> ', Moses escaping, lower-cased
    segs = iwslt_test_segments()
    test_en = read_lines(data_dir / "tok/test.en")
    assert test_en[0] == "it &apos;s the &quot; house &quot; &amp; the garden ."
    assert test_en[1:] == [s[:-1].lower() + " ." for name in TEST_SETS for s in segs[name]["en"]][1:]
    assert len(read_lines(data_dir / "tok/test.de")) == len(test_en)
    stats = manifest.stages["text"]["stats"]
    assert (stats["train"], stats["valid"], stats["test.en"]) == (len(train), len(valid), len(test_en))


def test_iwslt_bpe_dictionaries_and_tensors_agree(iwslt_prepared):
    data_dir, _, _ = iwslt_prepared
    codes = read_lines(data_dir / "bpe/codes")
    assert codes[0].startswith("#version") and len(codes) - 1 <= 60
    bpe_train = read_lines(data_dir / "bpe/train.de")
    assert any("@@ " in line for line in bpe_train)
    assert [line.replace("@@ ", "") for line in bpe_train] == read_lines(data_dir / "tok/train.de")
    src_dict, tgt_dict = (Dictionary.load(data_dir / f"dict.{l}.txt") for l in ("de", "en"))
    assert len(src_dict) % 8 == 0 and src_dict.symbols != tgt_dict.symbols  # separate dictionaries
    split = load_split(data_dir, "train", "de", "en")
    assert len(split) == len(bpe_train)
    assert split.src[4].tolist() == src_dict.encode_line(bpe_train[4]).tolist()
    assert int((split.src.tokens == src_dict.unk).sum()) == 0  # train has no unknown symbols
    assert torch.equal(split.src.lengths, torch.tensor([len(l.split()) + 1 for l in bpe_train]))


def test_iwslt_prepare_is_idempotent_and_fast(iwslt_prepared):
    data_dir, archive, _ = iwslt_prepared
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != ".prepare.lock")
    mtimes = [p.stat().st_mtime_ns for p in files]
    start = time.perf_counter()
    prepare_corpus(data_dir, IwsltCorpus(data_dir, archive=str(archive), sha256=sha256(archive), urls=[]), 60)
    assert time.perf_counter() - start < 2.0
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert not list(data_dir.rglob("*.tmp"))


def test_iwslt_refuses_wrong_checksum(tmp_path):
    archive = write_iwslt_archive(tmp_path)
    with pytest.raises(DataError) as e:
        prepare_corpus(tmp_path / "d", IwsltCorpus(tmp_path / "d", archive=str(archive), sha256="0" * 64), 60)
    assert f"has sha256 {sha256(archive)} but task.sha256={'0' * 64}" in one_line(e.value)
    assert archive.exists()  # a file the user named is not moved


def test_iwslt_refuses_corrupt_archive(tmp_path):
    archive = write_iwslt_archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[:300])  # truncated download
    with pytest.raises(DataError) as e:
        prepare_corpus(tmp_path / "d", IwsltCorpus(tmp_path / "d", archive=str(archive)), 60)
    assert "not a readable .tgz" in one_line(e.value)
    (tmp_path / "foreign.tgz").write_bytes(b"not a gzip file at all" * 20)
    with pytest.raises(DataError) as e:
        prepare_corpus(tmp_path / "e", IwsltCorpus(tmp_path / "e", archive=str(tmp_path / "foreign.tgz")), 60)
    one_line(e.value)


def test_iwslt_missing_archive_offline_says_where_to_put_it(tmp_path):
    data_dir = tmp_path / "data"
    corpus = IwsltCorpus(data_dir, urls=["http://127.0.0.1:9/de-en.tgz"])  # nothing listens on port 9
    with pytest.raises(DataError) as e:
        prepare_corpus(data_dir, corpus, 60)
    msg = one_line(e.value)
    assert str(data_dir / "raw" / "de-en.tgz") in msg and "task.archive" in msg


def test_iwslt_downloads_from_url_and_resumes_after_failed_stage(tmp_path, monkeypatch):
    archive = write_iwslt_archive(tmp_path / "mirror")
    data_dir = tmp_path / "data"
    corpus = IwsltCorpus(data_dir, urls=["http://127.0.0.1:9/x.tgz", archive.as_uri()], sha256=sha256(archive))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nmt_data, "_learn_codes", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(data_dir, corpus, 60)
    assert (data_dir / "raw" / "de-en.tgz").read_bytes() == archive.read_bytes()
    tok_mtime = (data_dir / "tok/train.de").stat().st_mtime_ns
    monkeypatch.undo()
    manifest = prepare_corpus(data_dir, corpus, 60)
    assert (data_dir / "tok/train.de").stat().st_mtime_ns == tok_mtime  # the text stage was not redone
    assert set(manifest.stages) == {"text", "bpe_codes", "bpe_apply", "dict", "binarize"}
    # a changed option redoes its stage and the ones after it only
    prepare_corpus(data_dir, corpus, 40)
    assert (data_dir / "tok/train.de").stat().st_mtime_ns == tok_mtime
    assert len(read_lines(data_dir / "bpe/codes")) - 1 <= 40


def test_xml_segments_follow_the_recipe():
    lines = ['<doc docid="1">', '<seg id="12">  Hallo  Welt ’ </seg>  ', "<title>T</title>", '<seg id="3">x</seg>']
    assert xml_segments(lines) == ["Hallo  Welt '", "x"]


# ---- Ding -----------------------------------------------------------------------------------------------------------
def test_ding_parser_on_handwritten_lines(tmp_path):
    path = write_ding_file(tmp_path / "de-en")
    pairs = parse_ding(path.read_text(encoding="utf-8").splitlines(keepends=True))
    assert pairs == [
        ("Das Haus ist sehr groß.", "The house is very big."),
        ("Der Hund läuft schnell über die Straße!", "The dog runs fast across the street!"),
        ("Siehst du den Baum im Garten?", "Do you see the tree in the garden?"),
        ("Es regnet.", "It is raining."),
        ("Sie spricht mit ihrem Freund.", "She speaks with her friend."),
        ("Er sagt „Hallo“.", "He says “hello”."),
        ("Das ist's.", "That's it."),
    ]


def test_ding_split_is_deterministic_and_keeps_same_source_together():
    splits = [split_of(f"Satz {i}.", 40, 40) for i in range(5000)]
    assert splits == [split_of(f"Satz {i}.", 40, 40) for i in range(5000)]
    counts = {s: splits.count(s) for s in ("train", "valid", "test")}
    assert 100 < counts["valid"] < 300 and 100 < counts["test"] < 300


def test_ding_corpus_pipeline_and_missing_file(tmp_path):
    path = write_ding_file(tmp_path / "de-en", extra_pairs=300)
    data_dir = tmp_path / "data"
    manifest = prepare_corpus(data_dir, DingCorpus(data_dir, ding_file=str(path), urls=[]), bpe_merges=50)
    stats = manifest.stages["text"]["stats"]
    assert stats["pairs"] == 7 + 300 and stats["train"] + stats["valid"] + stats["test"] <= stats["pairs"]
    assert stats["valid"] > 0 and stats["test"] > 0
    assert len(load_split(data_dir, "valid", "en", "de")) == stats["valid"]  # either direction
    with pytest.raises(DataError) as e:
        prepare_corpus(tmp_path / "x", DingCorpus(tmp_path / "x", ding_file=str(tmp_path / "nope"), urls=[]), 50)
    assert "trans-de-en" in one_line(e.value)


@pytest.mark.skipif(not REAL_DING.is_file(), reason="Ding dictionary absent (apt-get install trans-de-en)")
def test_ding_parser_on_the_real_file():
    pairs = parse_ding(REAL_DING.read_text(encoding="utf-8").splitlines(keepends=True))
    assert 15_000 < len(pairs) < 30_000
    assert len(set(pairs)) == len(pairs)
    for de, en in pairs[:2000]:
        assert de[0].isupper() and en[0].isupper() and de[-1] in ".!?\"“”»)" and "{" not in de + en
        assert "[" not in de + en and " | " not in de + en


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DING.is_file(), reason="Ding dictionary absent (apt-get install trans-de-en)")
def test_ding_real_prepare_is_fast(tmp_path):
    start = time.perf_counter()
    manifest = prepare_corpus(tmp_path, DingCorpus(tmp_path, urls=[]), bpe_merges=6000)
    assert time.perf_counter() - start < 60
    assert manifest.stages["text"]["stats"]["train"] > 12_000


# ---- raw folder -----------------------------------------------------------------------------------------------------
def test_raw_corpus_pipeline(tmp_path):
    raw = write_raw_corpus(tmp_path / "raw", "fr", "en")
    data_dir = tmp_path / "data"
    prepare_corpus(data_dir, RawTextCorpus(raw, ("fr", "en")), bpe_merges=30)
    for split, n in (("train", 120), ("valid", 10), ("test", 12)):
        assert len(load_split(data_dir, split, "fr", "en")) == n
    assert read_lines(data_dir / "tok/valid.en")[0].endswith(" 0 .")
    (raw / "test.en").write_text("one line\n")
    with pytest.raises(DataError) as e:
        prepare_corpus(data_dir, RawTextCorpus(raw, ("fr", "en")), bpe_merges=30)
    assert "differ in length" in one_line(e.value)
    with pytest.raises(DataError) as e:
        RawTextCorpus(tmp_path / "nowhere", ("fr", "en")).fingerprint()
    assert "train.fr" in one_line(e.value)


# ---- batching -------------------------------------------------------------------------------------------------------
def _lengths(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(2, 60, n)
    return src, np.clip(src + rng.integers(-10, 10, n), 2, None)


def test_token_batches_respect_max_tokens_and_cover_every_sentence_once():
    src, tgt = _lengths()
    batches = token_batches(src, tgt, 500, seed=1, epoch=3)
    for b in batches:
        assert len(b) * max(src[b].max(), tgt[b].max()) <= 500
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
    # bucketing: the batches are length-homogeneous
    assert np.mean([src[b].max() - src[b].min() for b in batches]) < 5


def test_token_batches_deterministic_per_seed_and_epoch():
    src, tgt = _lengths()
    same = lambda a, b: len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert same(token_batches(src, tgt, 500, seed=1, epoch=2), token_batches(src, tgt, 500, seed=1, epoch=2))
    assert not same(token_batches(src, tgt, 500, seed=1, epoch=2), token_batches(src, tgt, 500, seed=1, epoch=3))
    assert not same(token_batches(src, tgt, 500, seed=1, epoch=2), token_batches(src, tgt, 500, seed=2, epoch=2))
    with pytest.raises(ValueError, match="max_tokens"):
        token_batches(src, tgt, 40)


def test_rank_shards_are_disjoint_and_equal_sized():
    src, tgt = _lengths()
    batches = token_batches(src, tgt, 500, seed=1, epoch=1)
    shards = [shard(batches, r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(batches) // 3
    seen = [i for s in shards for b in s for i in b.tolist()]
    assert len(seen) == len(set(seen))
    dropped = [i for b in batches[len(batches) - len(batches) % 3:] for i in b.tolist()]
    assert sorted(seen + dropped) == list(range(len(src)))


def test_collate_layout():
    src = TokenArray(torch.tensor([5, 6, 2, 7, 2], dtype=torch.int32), torch.tensor([0, 3, 5]))
    tgt = TokenArray(torch.tensor([8, 2, 9, 10, 11, 2], dtype=torch.int32), torch.tensor([0, 2, 6]))
    b = collate(ParallelSplit(src, tgt), [1, 0])
    assert b["src_tokens"].tolist() == [[7, 2, 1], [5, 6, 2]]
    assert b["src_lengths"].tolist() == [2, 3]
    assert b["target"].tolist() == [[9, 10, 11, 2], [8, 2, 1, 1]]
    assert b["prev_output_tokens"].tolist() == [[2, 9, 10, 11], [2, 8, 1, 1]]
    assert b["id"].tolist() == [1, 0] and all(v.dtype == torch.long for v in b.values())
