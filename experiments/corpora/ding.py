"""German-English sentence pairs from the Ding dictionary (Frank Richter, TU Chemnitz, GPL; Debian package
``trans-de-en`` installs it as /usr/share/trans/de-en): the small offline corpus of the CPU defaults (the NMT
task's ``task=ding``, the language-modelling task's ``task=ding_lm`` on the English side).

File format (UTF-8, ``#`` comment lines)::

    German entry | German alt 2 | ... :: English entry | English alt 2 | ...

The ``|``-separated alternatives of the two sides correspond in order; inside an alternative ``;`` separates
synonyms; ``{f}`` ``{pl}`` ``{vt}`` are grammar annotations, ``[ugs.]`` ``[Br.]`` usage/region labels and
``<...>`` hidden search spellings. Parsing: pair alternative k of both sides (entries whose sides have a
different number of alternatives are skipped), remove ``{...}``, ``[...]`` and ``<...>``, take the first
``;``-synonym, replace ``’`` by ``'`` (as the IWSLT recipe does for its test set), keep the pair only if
both sides are sentences (begin with an upper-case letter, end with ``.``, ``!`` or ``?`` optionally followed
by closing quotes/brackets), and drop duplicate pairs. The real file (2023-01-30) gives 20,067 pairs.

Split (deterministic, independent of file order): the md5 of the German sentence, modulo 1000, below
``valid_permille`` -> valid, below ``valid_permille + test_permille`` -> test, else train; pairs with the same
German sentence always land in the same split.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path
from typing import Iterable

from experiments.task import DataError

DEFAULT_FILE = "/usr/share/trans/de-en"
DEFAULT_URLS = ("https://ftp.tu-chemnitz.de/pub/Local/urz/ding/de-en/de-en.txt.gz",)
# sha256 of the dictionary's text (uncompressed, so that the gzip of a download and the Debian file compare):
# "Version :: devel 2023-01-30", as Debian 12's trans-de-en 1.9-6 installs it (hashed from that package here;
# upstream publishes no checksum). The corpus sizes in this project's docs and results come from this file.
DEFAULT_SHA256 = "34052c6021d09eadfee7a893a789204265954df70fe9c36d38fa00058d79d326"

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


def text_sha256(path: Path) -> str:
    """sha256 of the dictionary's text: of the file, or of its decompressed content for a .gz."""
    h = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read the Ding dictionary {path} ({e}); point task.ding_file at de-en "
                        f"(Debian package trans-de-en) or de-en.txt.gz from {DEFAULT_URLS[0]}") from e
    return h.hexdigest()


def read_ding_file(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.readlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read the Ding dictionary {path} ({e}); point task.ding_file at de-en "
                        f"(Debian package trans-de-en) or de-en.txt.gz from {DEFAULT_URLS[0]}") from e
