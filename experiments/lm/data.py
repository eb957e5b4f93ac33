"""One Billion Word (Chelba et al., 2013, arXiv:1312.3005) and any corpus laid out like it: text -> vocabulary
-> one int32 token file per shard, streamed shard by shard so that memory stays bounded.

The layout (the extracted ``1-billion-word-language-modeling-benchmark-r13output.tar.gz``)::

    <root>/training-monolingual.tokenized.shuffled/news.en-000NN-of-00100           99 training shards, 00001-00099
    <root>/heldout-monolingual.tokenized.shuffled/news.en.heldout-000NN-of-00050   50 held-out shards, 00000-00049

Every file is tokenized text, one sentence per line. The standard test set is held-out shard 00000; we use
held-out shard 00001 as the validation set (``valid_file``). A corpus of your own needs a training folder of
that name holding any number of files and a held-out folder holding the two files named by ``valid_file`` and
``test_file`` (null: test = the first, valid = the second file in sorted order; a single file serves both).

Preparation (``prepare``; idempotent, resumable, one process at a time through ``.prepare.lock``)::

    <out>/vocab.txt             "word count" per line, id = line number: every word seen more than
                                ``unk_max_count`` times in training, ``</s>`` and ``<unk>``, most frequent first
                                (so that the adaptive softmax's head holds the frequent words)
    <out>/train/<shard>.npy     int32 token ids of one training shard, each sentence followed by ``</s>``
    <out>/valid.npy, test.npy   the same for the two held-out files
    <out>/manifest.json         per stage: a hash of its inputs and options, and its statistics (token counts)

Words seen <= ``unk_max_count`` times (the paper: 3) in the training shards map to ``<unk>``, also in the
held-out files. Counting and encoding read one shard at a time (tqdm progress per shard); the vocabulary of the
real corpus (millions of distinct words before the cut) is the largest object in memory.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from experiments.corpora.files import Manifest, download, options_hash, prepare_lock
from experiments.records import atomic_write, atomic_write_text
from experiments.task import DataError

log = logging.getLogger(__name__)

PIPELINE_VERSION = 1
EOS, UNK = "</s>", "<unk>"
TRAIN_DIR = "training-monolingual.tokenized.shuffled"
HELDOUT_DIR = "heldout-monolingual.tokenized.shuffled"
ARCHIVE_TOP = "1-billion-word-language-modeling-benchmark-r13output"
ARCHIVE_NAME = ARCHIVE_TOP + ".tar.gz"
DEFAULT_URL = "https://www.statmt.org/lm-benchmark/" + ARCHIVE_NAME


# ---- the layout -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """The text files of a corpus in the One Billion Word layout."""

    root: Path
    train: tuple[Path, ...]
    valid: Path
    test: Path

    def fingerprint(self, files: Iterable[Path]) -> list:
        """Names and sizes of ``files``: what the prepared files depend on."""
        return [[str(p.relative_to(self.root)), p.stat().st_size] for p in files]


def has_layout(root: Path) -> bool:
    return (root / TRAIN_DIR).is_dir() and (root / HELDOUT_DIR).is_dir()


def find_layout(root: Path, valid_file: str | None, test_file: str | None) -> Layout:
    root = Path(root)
    if not has_layout(root):
        raise DataError(f"{root} does not hold {TRAIN_DIR}/ and {HELDOUT_DIR}/; point task.data_dir at a folder "
                        f"laid out like One Billion Word (see experiments/lm/data.py)")
    train = tuple(sorted(p for p in (root / TRAIN_DIR).iterdir() if p.is_file() and not p.name.startswith(".")))
    heldout = sorted(p for p in (root / HELDOUT_DIR).iterdir() if p.is_file() and not p.name.startswith("."))
    if not train or not heldout:
        raise DataError(f"{root}: {TRAIN_DIR}/ or {HELDOUT_DIR}/ is empty; add the text files")
    test = root / HELDOUT_DIR / test_file if test_file else heldout[0]
    valid = root / HELDOUT_DIR / valid_file if valid_file else heldout[min(1, len(heldout) - 1)]
    for name, path in (("test_file", test), ("valid_file", valid)):
        if not path.is_file():
            raise DataError(f"task.{name}: {path} is missing; name a file of {root / HELDOUT_DIR} "
                            f"(or task.{name}=null for the sorted order)")
    if valid == test:
        log.warning("only one held-out file: %s serves as both valid and test set", test.name)
    return Layout(root, train, valid, test)


# ---- the archive ------------------------------------------------------------------------------------------------
def fetch_archive(data_dir: Path, archive: str | None, url: str | None) -> Path:
    """The archive: ``task.archive``, else a previous download in <data_dir>/raw, else a download of ``url``."""
    if archive:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise DataError(f"task.archive={archive} does not exist; give the path of {ARCHIVE_NAME}")
        return path
    path = data_dir / "raw" / ARCHIVE_NAME
    if not path.is_file():
        if not url:
            raise DataError(f"no {ARCHIVE_NAME} at {path} and task.url is null; set task.archive=FILE or task.url")
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s (1.8 GB)", url, path)
        download([url], path, f"download {url} by hand and set task.archive=FILE")
    return path


def extract_layout(archive: Path, dest: Path) -> Path:
    """Extract the training and held-out folders of ``archive`` into ``dest``; return the corpus root."""
    wanted = (f"{ARCHIVE_TOP}/{TRAIN_DIR}/", f"{ARCHIVE_TOP}/{HELDOUT_DIR}/")
    tmp = dest / (ARCHIVE_TOP + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, desc=f"extract {archive.name}", unit=" files", disable=None):
                if member.isfile() and member.name.startswith(wanted) and ".." not in member.name:
                    rel = Path(member.name).relative_to(ARCHIVE_TOP)
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(tmp / rel, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive} ({e}); delete it and download {ARCHIVE_NAME} again") from e
    if not has_layout(tmp):
        raise DataError(f"{archive} holds no {ARCHIVE_TOP}/{TRAIN_DIR}/ and {HELDOUT_DIR}/; is it {ARCHIVE_NAME}?")
    root = dest / ARCHIVE_TOP
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


# ---- vocabulary and encoding ------------------------------------------------------------------------------------
def read_sentences(path: Path) -> Iterable[list[str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split()
            if words:
                yield words


def count_words(files: Iterable[Path]) -> tuple[collections.Counter, int]:
    """Word counts over ``files`` (one file in memory at a time) and the number of sentences."""
    counts: collections.Counter = collections.Counter()
    sentences = 0
    files = list(files)
    for path in tqdm(files, desc="count words", unit=" shards", disable=None):
        for words in read_sentences(path):
            counts.update(words)
            sentences += 1
    return counts, sentences


def build_vocab(counts: collections.Counter, sentences: int, unk_max_count: int) -> list[tuple[str, int]]:
    """(word, count) of the vocabulary, most frequent first (ties: alphabetical); words seen <= ``unk_max_count``
    times fold into ``<unk>``, every sentence adds one ``</s>``."""
    kept = {w: c for w, c in counts.items() if c > unk_max_count and w not in (EOS, UNK)}
    rare = sum(c for w, c in counts.items() if c <= unk_max_count or w == UNK)
    kept[EOS] = sentences + counts.get(EOS, 0)
    kept[UNK] = rare
    return sorted(kept.items(), key=lambda wc: (-wc[1], wc[0]))


def save_vocab(vocab: list[tuple[str, int]], path: Path) -> None:
    atomic_write_text(path, "".join(f"{word} {count}\n" for word, count in vocab))


def load_vocab(path: Path) -> dict[str, int]:
    with open(path, encoding="utf-8") as f:
        return {line.rsplit(" ", 1)[0]: i for i, line in enumerate(f)}


def encode_file(path: Path, index: dict[str, int]) -> np.ndarray:
    """int32 ids of the words of ``path``, ``</s>`` after each sentence; unknown words -> ``<unk>``."""
    eos, unk = index[EOS], index[UNK]
    ids: list[int] = []
    for words in read_sentences(path):
        ids.extend([index.get(w, unk) for w in words])
        ids.append(eos)
    return np.asarray(ids, dtype=np.int32)


def save_array(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, array)
    atomic_write(path, write)


# ---- the pipeline -----------------------------------------------------------------------------------------------
def shard_file(out: Path, source: Path) -> Path:
    return out / "train" / f"{source.name}.npy"


def prepare(layout: Layout, out: Path, unk_max_count: int) -> dict:
    """Vocabulary and token files of ``layout`` under ``out``; returns the encode stage's statistics."""
    out = Path(out)
    with prepare_lock(out):
        manifest = Manifest(out)
        vocab_key = options_hash(PIPELINE_VERSION, layout.fingerprint(layout.train), unk_max_count)
        if not (manifest.done("vocab", vocab_key) and (out / "vocab.txt").exists()):
            counts, sentences = count_words(layout.train)
            vocab = build_vocab(counts, sentences, unk_max_count)
            save_vocab(vocab, out / "vocab.txt")
            manifest.record("vocab", vocab_key, stats={"vocab_size": len(vocab), "distinct_words": len(counts),
                                                       "train_sentences": sentences})
            log.info("vocabulary: %d words (of %d distinct, count > %d) from %d training files", len(vocab),
                     len(counts), unk_max_count, len(layout.train))
        encode_key = options_hash(vocab_key, layout.fingerprint([layout.valid, layout.test]))
        if manifest.done("encode", encode_key):
            return manifest.stages["encode"]["stats"]
        if not manifest.started("encode", encode_key):
            shutil.rmtree(out / "train", ignore_errors=True)
            manifest.record("encode", encode_key, done=False)
        (out / "train").mkdir(exist_ok=True)
        index = load_vocab(out / "vocab.txt")
        stats = {"vocab_size": len(index), "shard_tokens": [], "unk_tokens": 0}
        for source in tqdm(layout.train, desc="encode shards", unit=" shards", disable=None):
            target = shard_file(out, source)
            if not target.exists():  # shards of an interrupted run with the same hash are kept
                save_array(encode_file(source, index), target)
            tokens = np.load(target, mmap_mode="r")
            stats["shard_tokens"].append(int(tokens.shape[0]))
            stats["unk_tokens"] += int((tokens == index[UNK]).sum())
        for split, source in (("valid", layout.valid), ("test", layout.test)):
            tokens = encode_file(source, index)
            save_array(tokens, out / f"{split}.npy")
            stats[f"{split}_tokens"] = int(tokens.shape[0])
            stats[f"{split}_unk_tokens"] = int((tokens == index[UNK]).sum())
            stats[f"{split}_file"] = source.name
        stats["train_tokens"] = sum(stats["shard_tokens"])
        stats["train_files"] = [p.name for p in layout.train]
        manifest.record("encode", encode_key, stats=stats)
        log.info("encoded %d training tokens in %d shards, valid %d (%s), test %d (%s)", stats["train_tokens"],
                 len(layout.train), stats["valid_tokens"], layout.valid.name, stats["test_tokens"], layout.test.name)
        return stats
