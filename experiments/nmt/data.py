"""Parallel-corpus preparation shared by every NMT corpus: tokenized text -> joint BPE -> dictionaries -> tensors.

A corpus (IWSLT'14 in ``iwslt.py``, the Ding dictionary in ``ding.py``, a folder of raw text files here) only
writes tokenized, cleaned, lower-cased text ``tok/{train,valid,test}.{lang}``; the rest is common::

    <data_dir>/
      raw/                      downloads (archive, dictionary file)
      tok/{split}.{lang}        Moses-tokenized, length-filtered (train), lower-cased text   -- the corpus
      bpe/codes                 joint BPE merges learned on tok/train.{src} + tok/train.{tgt}
      bpe/{split}.{lang}        BPE-segmented text (fairseq's iwslt14.tokenized.de-en/{split}.{lang})
      dict.{lang}.txt           fairseq-style dictionaries built on bpe/train.{lang} (joined: on both)
      bin/{split}.{lang}.pt     {"tokens": int32 (sum of lengths,), "offsets": int64 (N+1,)}, eos appended
      manifest.json             per stage: a hash of its inputs and options, its files, its statistics

Each stage is skipped when the manifest holds the same hash and all its files exist, so ``prepare`` is
idempotent and resumes after the last finished stage; a changed option (say ``bpe_merges``) redoes that stage
and the ones after it. Files are written to ``*.tmp`` and renamed; one process at a time holds
``.prepare.lock``, so all ranks of a distributed job may call ``prepare``.

The text steps follow the IWSLT'14 recipe (fairseq ``examples/translation/prepare-iwslt14.sh``): Moses
tokenizer per language (``tokenizer.perl -l xx``, escaping on: ``'`` -> ``&apos;``), Moses
``clean-corpus-n.perl -ratio 1.5 ... 1 175`` on the tokenized training text, then ``lowercase.perl``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import torch
from sacremoses import MosesTokenizer
from tqdm import tqdm

from experiments.corpora.files import Manifest, file_sha256, options_hash, prepare_lock
from experiments.nmt.bpe import apply_bpe_lines, learn_joint_bpe, load_bpe
from experiments.nmt.dictionary import Dictionary
from experiments.records import atomic_write
from experiments.task import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
PIPELINE_VERSION = 1  # bump when a change to this file changes prepared outputs


# ---- text steps -------------------------------------------------------------------------------------------------
def moses_tokenize(lines: Sequence[str], lang: str, desc: str = "") -> list[str]:
    """Moses tokenizer (sacremoses port of tokenizer.perl -l lang; HTML-escaping on, no aggressive hyphens)."""
    tok = MosesTokenizer(lang=lang)
    it = tqdm(lines, desc=desc or f"tokenize {lang}", unit=" lines", disable=None, mininterval=2.0)
    return [tok.tokenize(line, escape=True, return_str=True) for line in it]


def clean_corpus(
    src: Sequence[str], tgt: Sequence[str], *, min_len: int = 1, max_len: int = 175, ratio: float = 1.5,
    max_word_length: int = 1000,
) -> tuple[list[str], list[str]]:
    """Moses ``clean-corpus-n.perl -ratio RATIO ... MIN MAX``: normalize whitespace, drop ``|`` (factor separator),
    drop a pair if a side is empty, has fewer than MIN or more than MAX words, a word longer than
    ``max_word_length`` characters, or if one side is more than RATIO times as long as the other."""
    if len(src) != len(tgt):
        raise DataError(f"parallel files differ in length ({len(src)} vs {len(tgt)} lines); fix the corpus")
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        s_words, t_words = s.replace("|", "").split(), t.replace("|", "").split()
        ns, nt = len(s_words), len(t_words)
        if not (min_len <= ns <= max_len and min_len <= nt <= max_len):
            continue  # (min_len >= 1 also drops empty sides)
        if ns / nt > ratio or nt / ns > ratio:
            continue
        if max(map(len, s_words + t_words)) > max_word_length:
            continue
        kept_src.append(" ".join(s_words))
        kept_tgt.append(" ".join(t_words))
    return kept_src, kept_tgt


def lowercase(lines: Iterable[str]) -> list[str]:
    return [line.lower() for line in lines]


# ---- files ------------------------------------------------------------------------------------------------------
def write_tokenized_split(tok_dir: Path, split: str, langs: tuple[str, str], src_lines: Sequence[str],
                          tgt_lines: Sequence[str], *, max_len: int, ratio: float, lower: bool) -> int:
    """The recipe's text steps for one split of raw sentence pairs: Moses tokenization, clean-corpus-n (train
    only), lower-casing; written to <tok_dir>/<split>.<lang>. Returns the number of pairs kept."""
    src, tgt = langs
    s_lines = moses_tokenize(src_lines, src, f"tokenize {split}.{src}")
    t_lines = moses_tokenize(tgt_lines, tgt, f"tokenize {split}.{tgt}")
    if split == "train":
        s_lines, t_lines = clean_corpus(s_lines, t_lines, max_len=max_len, ratio=ratio)
    if lower:
        s_lines, t_lines = lowercase(s_lines), lowercase(t_lines)
    write_lines(tok_dir / f"{split}.{src}", s_lines)
    write_lines(tok_dir / f"{split}.{tgt}", t_lines)
    return len(s_lines)


def read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def read_text_file(path: Path) -> list[str]:
    """The lines of a user's corpus file: UTF-8 text with at least one sentence, else a one-line DataError."""
    data = path.read_bytes()
    if b"\0" in data:
        raise DataError(f"{path} is a binary file (it holds NUL bytes), not text; task.raw_dir needs UTF-8 text, "
                        f"one sentence per line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); convert it, "
                        f"e.g. iconv -f latin1 -t utf-8") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty; task.raw_dir needs one sentence per line in every file")
    return lines


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Atomically write ``lines`` (one per line) to ``path``."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                if "\n" in line:
                    raise ValueError(f"line with a newline written to {path}")
                f.write(line + "\n")
    atomic_write(Path(path), write)


# ---- the pipeline -----------------------------------------------------------------------------------------------
class Corpus(Protocol):
    """A source of tokenized parallel text. ``fingerprint`` fetches/verifies its input and returns what the
    tokenized text depends on (input checksum + options); ``write_tokenized`` writes tok/{split}.{lang}."""

    name: str
    langs: tuple[str, str]

    def fingerprint(self) -> dict: ...

    def write_tokenized(self, tok_dir: Path) -> dict: ...


def run_stage(manifest: Manifest, stage: str, key: str, files: list[str], build: Callable[[], dict | None]) -> None:
    if manifest.done(stage, key):
        log.info("prepare %s: %s up to date", manifest.dir, stage)
        return
    start = time.perf_counter()
    log.info("prepare %s: %s ...", manifest.dir, stage)
    stats = build() or {}
    missing = [f for f in files if not (manifest.dir / f).exists()]
    if missing:
        raise RuntimeError(f"stage {stage} did not write {missing}")
    manifest.record(stage, key, files=files, stats=stats)
    log.info("prepare %s: %s done in %.1f s %s", manifest.dir, stage, time.perf_counter() - start, stats or "")


def prepare_corpus(data_dir: Path, corpus: Corpus, bpe_merges: int, joined_dictionary: bool = False) -> Manifest:
    """Run the whole pipeline for ``corpus`` under ``data_dir`` (see the module docstring)."""
    data_dir = Path(data_dir)
    langs = corpus.langs
    with prepare_lock(data_dir):
        manifest = Manifest(data_dir)
        for sub in ("tok", "bpe", "bin"):
            (data_dir / sub).mkdir(exist_ok=True)
        tok_files = [f"tok/{s}.{l}" for s in SPLITS for l in langs]
        bpe_files = [f"bpe/{s}.{l}" for s in SPLITS for l in langs]
        dict_files = [f"dict.{l}.txt" for l in langs]
        bin_files = [f"bin/{s}.{l}.pt" for s in SPLITS for l in langs]

        text_key = options_hash(PIPELINE_VERSION, corpus.name, corpus.fingerprint())
        run_stage(manifest, "text", text_key, tok_files, lambda: corpus.write_tokenized(data_dir / "tok"))

        codes_key = options_hash(text_key, bpe_merges)
        run_stage(manifest, "bpe_codes", codes_key, ["bpe/codes"], lambda: _learn_codes(data_dir, langs, bpe_merges))
        run_stage(manifest, "bpe_apply", codes_key, bpe_files, lambda: _apply_codes(data_dir, langs))

        dict_key = options_hash(codes_key, joined_dictionary)
        run_stage(manifest, "dict", dict_key, dict_files, lambda: _build_dicts(data_dir, langs, joined_dictionary))
        run_stage(manifest, "binarize", dict_key, bin_files, lambda: _binarize(data_dir, langs))
    return manifest


def _learn_codes(data_dir: Path, langs: tuple[str, str], merges: int) -> dict:
    atomic_write(data_dir / "bpe" / "codes",
                 lambda tmp: learn_joint_bpe([data_dir / "tok" / f"train.{l}" for l in langs], merges, tmp))
    return {"merges": merges}


def _apply_codes(data_dir: Path, langs: tuple[str, str]) -> dict:
    bpe = load_bpe(data_dir / "bpe" / "codes")
    for split in SPLITS:
        for lang in langs:
            lines = read_lines(data_dir / "tok" / f"{split}.{lang}")
            it = tqdm(lines, desc=f"apply bpe {split}.{lang}", unit=" lines", disable=None, mininterval=2.0)
            write_lines(data_dir / "bpe" / f"{split}.{lang}", apply_bpe_lines(bpe, it))
    return {}


def _build_dicts(data_dir: Path, langs: tuple[str, str], joined: bool) -> dict:
    train = {l: read_lines(data_dir / "bpe" / f"train.{l}") for l in langs}
    stats = {}
    for lang in langs:
        dictionary = Dictionary.build(train[langs[0]] + train[langs[1]] if joined else train[lang])
        atomic_write(data_dir / f"dict.{lang}.txt", dictionary.save)
        stats[f"dict_size_{lang}"] = len(dictionary)
    return stats


def _binarize(data_dir: Path, langs: tuple[str, str]) -> dict:
    stats = {}
    for lang in langs:
        dictionary = Dictionary.load(data_dir / f"dict.{lang}.txt")
        for split in SPLITS:
            lines = read_lines(data_dir / "bpe" / f"{split}.{lang}")
            ids = [dictionary.encode_line(line) for line in lines]
            lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
            offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
            tokens = torch.cat(ids).to(torch.int32) if ids else torch.zeros(0, dtype=torch.int32)
            atomic_write(data_dir / "bin" / f"{split}.{lang}.pt",
                         lambda tmp: torch.save({"tokens": tokens, "offsets": offsets}, tmp))
            n_unk = int((tokens == dictionary.unk).sum())
            stats[f"{split}.{lang}"] = {"sentences": len(lines), "tokens": int(tokens.numel()), "unk": n_unk}
    return stats


# ---- loading ----------------------------------------------------------------------------------------------------
@dataclass
class TokenArray:
    """N variable-length sentences stored flat: sentence i is ``tokens[offsets[i]:offsets[i+1]]`` (eos included)."""

    tokens: torch.Tensor  # (sum of lengths,) int32
    offsets: torch.Tensor  # (N+1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]].long()

    @property
    def lengths(self) -> torch.Tensor:  # (N,) int64
        return self.offsets[1:] - self.offsets[:-1]

    @classmethod
    def load(cls, path: Path) -> "TokenArray":
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(d["tokens"], d["offsets"])


@dataclass
class ParallelSplit:
    src: TokenArray
    tgt: TokenArray

    def __post_init__(self):
        if len(self.src) != len(self.tgt):
            raise DataError(f"source and target have {len(self.src)} vs {len(self.tgt)} sentences; rerun prepare")

    def __len__(self) -> int:
        return len(self.src)


def load_split(data_dir: Path, split: str, src: str, tgt: str) -> ParallelSplit:
    data_dir = Path(data_dir)
    paths = [data_dir / "bin" / f"{split}.{lang}.pt" for lang in (src, tgt)]
    for p in paths:
        if not p.exists():
            raise DataError(f"prepared data {p} is missing; run the task's prepare() first")
    return ParallelSplit(TokenArray.load(paths[0]), TokenArray.load(paths[1]))


# ---- a folder of raw parallel text ------------------------------------------------------------------------------
class RawTextCorpus:
    """``raw_dir/{train,valid,test}.{src,tgt}``, one untokenized sentence per line. Same text steps as IWSLT:
    Moses tokenization, clean-corpus-n (1..max_len words, ratio) on train only, optional lower-casing."""

    name = "raw"

    def __init__(self, raw_dir: Path, langs: tuple[str, str], *, lowercase: bool = True, max_len: int = 175,
                 ratio: float = 1.5):
        self.raw_dir, self.langs = Path(raw_dir), tuple(langs)
        self.lowercase, self.max_len, self.ratio = lowercase, max_len, ratio

    def _paths(self) -> dict[tuple[str, str], Path]:
        return {(s, l): self.raw_dir / f"{s}.{l}" for s in SPLITS for l in self.langs}

    def fingerprint(self) -> dict:
        missing = [str(p) for p in self._paths().values() if not p.is_file()]
        if missing:
            raise DataError(f"raw corpus files missing: {', '.join(missing)}; task.raw_dir must hold "
                            f"{{train,valid,test}}.{self.langs[0]} and .{self.langs[1]}, one sentence per line")
        sums = {f"{s}.{l}": file_sha256(p) for (s, l), p in self._paths().items()}
        return {"files": sums, "lowercase": self.lowercase, "max_len": self.max_len, "ratio": self.ratio}

    def write_tokenized(self, tok_dir: Path) -> dict:
        src, tgt = self.langs
        stats = {}
        for split in SPLITS:
            s_lines, t_lines = read_text_file(self.raw_dir / f"{split}.{src}"), read_text_file(self.raw_dir / f"{split}.{tgt}")
            if len(s_lines) != len(t_lines):
                raise DataError(f"{self.raw_dir}/{split}.{src} and .{tgt} differ in length "
                                f"({len(s_lines)} vs {len(t_lines)} lines); fix the corpus")
            stats[split] = write_tokenized_split(tok_dir, split, self.langs, s_lines, t_lines, max_len=self.max_len,
                                                 ratio=self.ratio, lower=self.lowercase)
        return stats
