"""A token <-> index vocabulary with fairseq's conventions (so checkpoints and numbers line up with fairseq's).

Layout of the indices::

    0 "<s>"  (bos)     1 "<pad>"     2 "</s>"  (eos)     3 "<unk>"
    4 ...              the symbols by descending count (ties in alphabetical order)
    ... "madeupword0000", "madeupword0001", ...  padding up to a multiple of 8 (fairseq's padding_factor=8)

Saved as fairseq's ``dict.txt``: one ``symbol count`` line per non-special symbol (the madeup words included,
with count 0), specials not written. Encoding a line splits on whitespace, maps unknown symbols to ``<unk>`` and
appends ``</s>`` (fairseq's ``encode_line(..., append_eos=True)``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
PADDING_FACTOR = 8


class Dictionary:
    bos, pad, eos, unk = BOS, PAD, EOS, UNK

    def __init__(self, symbols: Sequence[str], counts: Sequence[int]):
        self.symbols = list(SPECIALS) + list(symbols)
        self.counts = [0] * len(SPECIALS) + list(counts)
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        if len(self.indices) != len(self.symbols):
            raise ValueError("duplicate symbols in the dictionary")

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols and self.counts == other.counts

    # ---- building and saving -------------------------------------------------------------------------------
    @classmethod
    def build(cls, lines: Iterable[str], padding_factor: int = PADDING_FACTOR) -> "Dictionary":
        """Count whitespace tokens of ``lines``; order by (-count, symbol); pad to a multiple of ``padding_factor``."""
        counter = Counter(tok for line in lines for tok in line.split())
        for special in SPECIALS:
            counter.pop(special, None)
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        symbols, counts = [s for s, _ in ranked], [c for _, c in ranked]
        n_pad = -(len(SPECIALS) + len(symbols)) % padding_factor
        symbols += [f"madeupword{i:04d}" for i in range(n_pad)]
        counts += [0] * n_pad
        return cls(symbols, counts)

    def save(self, path: Path) -> None:
        text = "".join(f"{s} {c}\n" for s, c in zip(self.symbols[len(SPECIALS):], self.counts[len(SPECIALS):]))
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Dictionary":
        symbols, counts = [], []
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            symbol, _, count = line.rpartition(" ")
            if not symbol or not count.isdigit():
                raise ValueError(f"{path}:{n}: expected 'symbol count', got {line!r}")
            symbols.append(symbol)
            counts.append(int(count))
        return cls(symbols, counts)

    # ---- encoding and decoding -----------------------------------------------------------------------------
    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, UNK)

    def encode_line(self, line: str) -> torch.Tensor:
        """Whitespace tokens -> ids + eos, int64 tensor (L+1,)."""
        return torch.tensor([self.index(tok) for tok in line.split()] + [EOS], dtype=torch.long)

    def string(self, ids: Iterable[int], escape_unk: bool = False) -> str:
        """ids -> space-joined symbols; bos/pad/eos dropped; unk written as ``<<unk>>`` when ``escape_unk``
        (fairseq writes references that way so an unknown reference word never matches a hypothesis)."""
        out = []
        for i in ids:
            i = int(i)
            if i in (BOS, PAD, EOS):
                continue
            out.append("<<unk>>" if (i == UNK and escape_unk) else self.symbols[i])
        return " ".join(out)
