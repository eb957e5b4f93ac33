"""German-English sentence pairs from the Ding dictionary (Frank Richter, TU Chemnitz, GPL; Debian package
``trans-de-en`` installs it as /usr/share/trans/de-en) -- the small offline corpus of the CPU default.

File format (UTF-8, ``#`` comment lines)::

    German entry | German alt 2 | ... :: English entry | English alt 2 | ...

The ``|``-separated alternatives of the two sides correspond in order; inside an alternative ``;`` separates
synonyms; ``{f}`` ``{pl}`` ``{vt}`` are grammar annotations, ``[ugs.]`` ``[Br.]`` usage/region labels and
``<...>`` hidden search spellings. Parsing: pair alternative k of both sides (entries whose sides have a
different number of alternatives are skipped), remove ``{...}``, ``[...]`` and ``<...>``, take the first
``;``-synonym, replace ``’`` by ``'`` (as the IWSLT recipe does for its test set), keep the pair only if
both sides are sentences (begin with an upper-case letter, end with ``.``, ``!`` or ``?`` optionally followed
by closing quotes/brackets), and drop duplicate pairs. The real file (2023-01-30) gives 20,067 pairs; after
the split and clean-corpus-n on train: 16,650 train, 800 valid, 806 test.

Split (deterministic, independent of file order): the md5 of the German sentence, modulo 1000, below
``valid_permille`` -> valid, below ``valid_permille + test_permille`` -> test, else train; pairs with the same
German sentence always land in the same split. Then the IWSLT text steps (Moses tokenization, clean-corpus-n
on train, lower-casing) and, in ``data.py``, joint BPE (6,000 merges by default: the corpus is small).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

from experiments.nmt.data import SPLITS, clean_corpus, file_sha256, lowercase, moses_tokenize, write_lines
from experiments.nmt.iwslt import download
from experiments.task import DataError

log = logging.getLogger(__name__)

DEFAULT_FILE = "/usr/share/trans/de-en"
DEFAULT_URLS = ("https://ftp.tu-chemnitz.de/pub/Local/urz/ding/de-en/de-en.txt.gz",)

_ANNOTATION = re.compile(r"\s*(\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>)")
_SENTENCE_END = re.compile(r"[.!?][\"'\u201c\u201d\u2019\u00bb)]*$")


def _clean_alternative(text: str) -> str:
    text = _ANNOTATION.sub("", text).replace("\u2019", "'")
    first_synonym = text.split(";")[0]
    return " ".join(first_synonym.split())


def is_sentence(text: str) -> bool:
    return bool(text) and text[0].isupper() and bool(_SENTENCE_END.search(text))


def parse_ding(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(German, English) sentence pairs from Ding dictionary lines, in file order, duplicates removed."""
    pairs, seen = [], set()
    for line in lines:
        if line.startswith("#"):
            continue
        sides = line.rstrip("\n").split(" :: ")
        if len(sides) != 2:
            continue
        de_alts, en_alts = sides[0].split(" | "), sides[1].split(" | ")
        if len(de_alts) != len(en_alts):
            continue
        for de, en in zip(de_alts, en_alts):
            de, en = _clean_alternative(de), _clean_alternative(en)
            if is_sentence(de) and is_sentence(en) and (de, en) not in seen:
                seen.add((de, en))
                pairs.append((de, en))
    return pairs


def split_of(german: str, valid_permille: int, test_permille: int) -> str:
    bucket = int(hashlib.md5(german.encode("utf-8")).hexdigest(), 16) % 1000
    if bucket < valid_permille:
        return "valid"
    return "test" if bucket < valid_permille + test_permille else "train"


def read_ding_file(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.readlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read the Ding dictionary {path} ({e}); point task.ding_file at de-en "
                        f"(Debian package trans-de-en) or de-en.txt.gz from {DEFAULT_URLS[0]}") from e


class DingCorpus:
    name = "ding"
    langs = ("de", "en")

    def __init__(self, data_dir: Path, *, ding_file: str | None = DEFAULT_FILE, urls: Sequence[str] = DEFAULT_URLS,
                 valid_permille: int = 40, test_permille: int = 40, max_len: int = 175, ratio: float = 1.5,
                 lowercase: bool = True):
        self.download_to = Path(data_dir) / "raw" / "de-en.txt.gz"
        self.ding_file = Path(ding_file) if ding_file else None
        self.urls = list(urls or ())
        self.valid_permille, self.test_permille = valid_permille, test_permille
        self.max_len, self.ratio, self.lowercase = max_len, ratio, lowercase

    def source_file(self) -> Path:
        """The local dictionary file, else a previous download, else a new download."""
        if self.ding_file and self.ding_file.is_file():
            return self.ding_file
        if not self.download_to.is_file():
            self.download_to.parent.mkdir(parents=True, exist_ok=True)
            try:
                download(self.urls, self.download_to)
            except DataError:
                raise DataError(
                    f"Ding dictionary not found at {self.ding_file} and not downloadable; install the Debian "
                    f"package trans-de-en, or put de-en.txt.gz ({DEFAULT_URLS[0]}) at {self.download_to}"
                ) from None
        return self.download_to

    def fingerprint(self) -> dict:
        path = self.source_file()
        return {"sha256": file_sha256(path), "valid_permille": self.valid_permille,
                "test_permille": self.test_permille, "max_len": self.max_len, "ratio": self.ratio,
                "lowercase": self.lowercase}

    def write_tokenized(self, tok_dir: Path) -> dict:
        pairs = parse_ding(read_ding_file(self.source_file()))
        if not pairs:
            raise DataError(f"no sentence pairs found in {self.source_file()}; is it the Ding de-en dictionary?")
        by_split = {s: [] for s in SPLITS}
        for de, en in pairs:
            by_split[split_of(de, self.valid_permille, self.test_permille)].append((de, en))
        stats = {"pairs": len(pairs)}
        for split in SPLITS:
            de = moses_tokenize([p[0] for p in by_split[split]], "de", f"tokenize {split}.de")
            en = moses_tokenize([p[1] for p in by_split[split]], "en", f"tokenize {split}.en")
            if split == "train":
                de, en = clean_corpus(de, en, max_len=self.max_len, ratio=self.ratio)
            if self.lowercase:
                de, en = lowercase(de), lowercase(en)
            write_lines(tok_dir / f"{split}.de", de)
            write_lines(tok_dir / f"{split}.en", en)
            stats[split] = len(de)
        return stats
