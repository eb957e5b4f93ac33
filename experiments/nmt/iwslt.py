"""IWSLT'14 German-English (TED talks), prepared as fairseq's ``examples/translation/prepare-iwslt14.sh`` does --
the data of the paper's Table 2 (Liu et al., ICLR 2020, Sec. 5 "Neural Machine Translation").

Input: the WIT3 archive ``de-en.tgz`` (release 2014-01) holding ``de-en/train.tags.de-en.{de,en}`` (one talk
segment per line, talk metadata as tag lines) and ``de-en/IWSLT14.TED{,X}.{dev,tst}20xx.de-en.{de,en}.xml``
(``<seg id="N"> text </seg>`` lines). Steps, as the recipe:

1. train: drop lines containing ``<url>``, ``<talkid>``, ``<keywords>`` (``drop_tags``), strip the
   ``<title>``/``</title>``/``<description>``/``</description>`` tags (their text stays), Moses-tokenize each
   language, ``clean-corpus-n -ratio 1.5`` keeping pairs with 1..175 words a side (on the tokenized, still
   cased text), lower-case;
2. valid = every 23rd line of the cleaned train (lines 23, 46, ...), train = the other lines;
3. test = the ``<seg id`` lines of dev2010, TEDX.dev2012, tst2010, tst2011, tst2012 (that order), the seg tags
   removed, ``’`` replaced by ``'``, tokenized and lower-cased (not length-filtered);
4. (in ``data.py``) joint BPE with 10,000 merges learned on train.de + train.en and applied to everything.

The archive is taken from ``task.archive`` (a local file) or ``<data_dir>/raw/de-en.tgz``, else downloaded from
the first working URL of ``task.urls`` (resumed if a partial download exists). Its sha256 is verified when
``task.sha256`` is set and recorded in manifest.json otherwise. The recipe's published numbers: 160,239 train,
7,283 valid, 6,750 test pairs (fairseq's examples/translation README).
"""

from __future__ import annotations

import logging
import re
import tarfile
import zlib
from pathlib import Path
from typing import Sequence

from experiments.corpora.files import download, verify_checksum
from experiments.nmt.data import clean_corpus, lowercase, moses_tokenize, write_lines
from experiments.task import DataError

log = logging.getLogger(__name__)

DEFAULT_URLS = (
    "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz",  # fairseq's mirror of the 2014-01 archive
    "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",  # the original location (the recipe's URL)
)
ARCHIVE_NAME = "de-en.tgz"
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012")
DROP_TAGS = ("url", "talkid", "keywords")
STRIP_TAGS = ("title", "description")
VALID_EVERY = 23

_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")


# ---- reading the archive ----------------------------------------------------------------------------------------
def read_archive(path: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """The lines of ``names`` (paths inside the archive), read without extracting anything to disk; each must be
    a regular file (a link or device member named like one is refused: the archive is not the genuine one)."""
    out = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for name in names:
                try:
                    info = tar.getmember(name)
                except KeyError:
                    info = None
                if info is not None and not info.isfile():
                    raise DataError(f"{path} holds {name} as a link or special file, not a regular file; this is "
                                    f"not the IWSLT'14 de-en archive (WIT3 2014-01): delete it and download it again")
                member = tar.extractfile(info) if info is not None else None
                if member is None:
                    raise DataError(f"{path} has no file {name}; this is not the IWSLT'14 de-en archive "
                                    f"(WIT3 2014-01): delete it and download it again")
                out[name] = member.read().decode("utf-8").splitlines()
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable .tgz archive ({type(e).__name__}: {e}); "
                        f"delete it and download it again") from e
    return out


# ---- the recipe's text steps ------------------------------------------------------------------------------------
def strip_train_tags(lines: Sequence[str], drop_tags: Sequence[str] = DROP_TAGS) -> list[str]:
    """``grep -v '<url>'`` ... and ``sed -e 's/<title>//g'`` ... of the recipe."""
    drop = [f"<{t}>" for t in drop_tags]
    out = []
    for line in lines:
        if any(d in line for d in drop):
            continue
        for tag in STRIP_TAGS:
            line = line.replace(f"<{tag}>", "").replace(f"</{tag}>", "")
        out.append(line)
    return out


def xml_segments(lines: Sequence[str]) -> list[str]:
    """``grep '<seg id'`` then strip the seg tags and replace ``’`` by ``'`` (recipe, valid/test part)."""
    return [_SEG_CLOSE.sub("", _SEG_OPEN.sub("", line)).replace("\u2019", "'") for line in lines if "<seg id" in line]


class IwsltCorpus:
    """IWSLT'14 de-en (both directions use the same prepared files; ``task.src/tgt`` pick the direction)."""

    name = "iwslt14"
    langs = ("de", "en")

    def __init__(self, data_dir: Path, *, archive: str | None = None, urls: Sequence[str] = DEFAULT_URLS,
                 sha256: str | None = None, drop_tags: Sequence[str] = DROP_TAGS, max_len: int = 175,
                 ratio: float = 1.5):
        self.archive = Path(archive) if archive else Path(data_dir) / "raw" / ARCHIVE_NAME
        self.urls, self.sha256 = list(urls or ()), sha256
        self.drop_tags, self.max_len, self.ratio = list(drop_tags), max_len, ratio

    def fingerprint(self) -> dict:
        if not self.archive.exists():
            self.archive.parent.mkdir(parents=True, exist_ok=True)
            download(self.urls, self.archive, f"put {ARCHIVE_NAME} (WIT3 2014-01 texts/de/en) at {self.archive} or "
                     f"set task.archive=/path/to/{ARCHIVE_NAME}")
        actual = verify_checksum(self.archive, self.sha256, move_aside=self.archive.parent.name == "raw")
        return {"archive_sha256": actual, "drop_tags": self.drop_tags, "max_len": self.max_len, "ratio": self.ratio}

    def write_tokenized(self, tok_dir: Path) -> dict:
        src, tgt = self.langs
        names = [f"de-en/train.tags.de-en.{l}" for l in self.langs]
        names += [f"de-en/{t}.de-en.{l}.xml" for t in TEST_SETS for l in self.langs]
        files = read_archive(self.archive, names)

        train = {l: strip_train_tags(files[f"de-en/train.tags.de-en.{l}"], self.drop_tags) for l in self.langs}
        if len(train[src]) != len(train[tgt]):
            raise DataError(f"{self.archive}: train.tags.de-en.de/.en have {len(train[src])} vs {len(train[tgt])} "
                            f"text lines after removing tag lines; the archive is damaged, download it again")
        tok = {l: moses_tokenize(train[l], l, f"tokenize train.{l}") for l in self.langs}
        clean_src, clean_tgt = clean_corpus(tok[src], tok[tgt], max_len=self.max_len, ratio=self.ratio)
        clean = {src: lowercase(clean_src), tgt: lowercase(clean_tgt)}

        stats = {"train_raw": len(train[src]), "cleaned": len(clean[src])}
        for lang in self.langs:
            lines = clean[lang]
            write_lines(tok_dir / f"valid.{lang}", [x for i, x in enumerate(lines, 1) if i % VALID_EVERY == 0])
            write_lines(tok_dir / f"train.{lang}", [x for i, x in enumerate(lines, 1) if i % VALID_EVERY != 0])
            test = [seg for t in TEST_SETS for seg in xml_segments(files[f"de-en/{t}.de-en.{lang}.xml"])]
            write_lines(tok_dir / f"test.{lang}", lowercase(moses_tokenize(test, lang, f"tokenize test.{lang}")))
            stats[f"test.{lang}"] = len(test)
        if stats[f"test.{src}"] != stats[f"test.{tgt}"]:
            raise DataError(f"{self.archive}: the test xml files have {stats[f'test.{src}']} vs "
                            f"{stats[f'test.{tgt}']} segments; the archive is damaged, download it again")
        stats["valid"] = len(clean[src]) // VALID_EVERY
        stats["train"] = len(clean[src]) - stats["valid"]
        return stats
