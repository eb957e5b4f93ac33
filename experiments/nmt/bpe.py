"""Joint byte-pair encoding (Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with Subword
Units", ACL 2016), learned and applied with the ``subword-nmt`` package as the IWSLT'14 recipe does
(``learn_bpe.py -s 10000`` on the concatenated source+target training text, ``apply_bpe.py -c code``).

Learning: start from characters (the last one of a word marked ``</w>``), repeatedly merge the most frequent
adjacent pair of symbols (pairs of words seen fewer than ``min_frequency=2`` times are not merged), ``merges``
times. Applying: split every word into the learned units, non-final units marked with the separator ``@@``,
e.g. ``verschmutzt`` -> ``vers@@ chm@@ utzt``. Removing BPE is the regex ``(@@ )|(@@ ?$)`` -> ``""``.

``apply_bpe_lines`` uses subword-nmt's Python API (one ``BPE`` object, whose per-word cache makes repeated
words free) rather than a subprocess per file.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Iterable, Iterator

from subword_nmt.apply_bpe import BPE
from subword_nmt.learn_bpe import learn_bpe

SEPARATOR = "@@"


def learn_joint_bpe(train_files: Iterable[Path], merges: int, codes_path: Path) -> None:
    """Learn ``merges`` BPE merge operations on the concatenation of ``train_files``; write them to ``codes_path``."""
    handles = [open(p, encoding="utf-8") for p in train_files]
    try:
        with open(codes_path, "w", encoding="utf-8") as out:
            learn_bpe(itertools.chain(*handles), out, merges, min_frequency=2)
    finally:
        for h in handles:
            h.close()


def load_bpe(codes_path: Path) -> BPE:
    with open(codes_path, encoding="utf-8") as f:
        return BPE(io.StringIO(f.read()), separator=SEPARATOR)


def apply_bpe_lines(bpe: BPE, lines: Iterable[str]) -> Iterator[str]:
    """Segment each whitespace-tokenized line (newline stripped) into BPE units."""
    for line in lines:
        yield " ".join(bpe.segment_tokens(line.split()))
