"""The NMT corpus of German-English sentence pairs from the Ding dictionary (Frank Richter, TU Chemnitz, GPL;
Debian package ``trans-de-en`` installs it as /usr/share/trans/de-en) -- the small offline corpus of the CPU
default. The file format, the parsing and the split rule are in experiments/corpora/ding.py (shared with the
language-modelling task). The real file (2023-01-30) gives 20,067 pairs; after the split and clean-corpus-n on
train: 16,650 train, 800 valid, 806 test.

Split (deterministic, independent of file order): the md5 of the German sentence, modulo 1000, below
``valid_permille`` -> valid, below ``valid_permille + test_permille`` -> test, else train; pairs with the same
German sentence always land in the same split. Then the IWSLT text steps (Moses tokenization, clean-corpus-n
on train, lower-casing) and, in ``data.py``, joint BPE (6,000 merges by default: the corpus is small).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from experiments.corpora.ding import (DEFAULT_FILE, DEFAULT_SHA256, DEFAULT_URLS, parse_ding, read_ding_file,
                                      split_of, text_sha256)
from experiments.corpora.files import download, verify_checksum
from experiments.nmt.data import SPLITS, write_tokenized_split
from experiments.task import DataError

log = logging.getLogger(__name__)


class DingCorpus:
    name = "ding"
    langs = ("de", "en")

    def __init__(self, data_dir: Path, *, ding_file: str | None = DEFAULT_FILE, urls: Sequence[str] = DEFAULT_URLS,
                 valid_permille: int = 40, test_permille: int = 40, max_len: int = 175, ratio: float = 1.5,
                 lowercase: bool = True, sha256: str | None = DEFAULT_SHA256):
        self.sha256 = sha256
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
            download(self.urls, self.download_to,
                     f"the Ding dictionary is not at {self.ding_file} either; install the Debian package "
                     f"trans-de-en, or put de-en.txt.gz ({DEFAULT_URLS[0]}) at {self.download_to}")
        return self.download_to

    def fingerprint(self) -> dict:
        """The pinned text hash is enforced on a download (a mismatching one is moved aside); a local file (the
        Debian package's, or task.ding_file) of another version is used with a warning, its hash recorded."""
        path = self.source_file()
        actual = text_sha256(path)
        if path == self.download_to:
            verify_checksum(path, self.sha256, "task.sha256", actual=actual)
        elif self.sha256 and actual != self.sha256.lower():
            log.warning("%s is another version of the Ding dictionary than the pinned one (sha256 %s, task.sha256 "
                        "%s): the corpus differs from the published numbers", path, actual, self.sha256)
        return {"sha256": actual, "valid_permille": self.valid_permille,
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
            de, en = [p[0] for p in by_split[split]], [p[1] for p in by_split[split]]
            stats[split] = write_tokenized_split(tok_dir, split, ("de", "en"), de, en, max_len=self.max_len,
                                                 ratio=self.ratio, lower=self.lowercase)
        return stats
