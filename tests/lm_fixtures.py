"""Small corpora in the real One Billion Word layout (file and folder names of the r13output archive) for the
language-modelling tests: deterministic sentences over a Zipf-like vocabulary, so that some words are rare
(-> <unk>) and some frequent."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

from experiments.lm.data import ARCHIVE_TOP, HELDOUT_DIR, TRAIN_DIR

WORDS = [f"w{i}" for i in range(60)]
TRAIN_FILES = [f"news.en-{k:05d}-of-00100" for k in (1, 2, 3)]
HELDOUT_FILES = [f"news.en.heldout-{k:05d}-of-00050" for k in (0, 1)]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, weights, k=rng.randint(3, 12))
        if rng.random() < 0.3:  # a rare word (seen 1-3 times in the corpus, mostly)
            words.insert(rng.randrange(len(words)), f"x{rng.randrange(300)}")
        out.append(" ".join(words) + " .")
    return out


def layout_files(train_sentences: int = 120, heldout_sentences: int = 40) -> dict[str, str]:
    """{relative path: text} of a corpus in the 1BW layout."""
    files = {f"{TRAIN_DIR}/{name}": "".join(s + "\n" for s in sentences(train_sentences, seed=k))
             for k, name in enumerate(TRAIN_FILES)}
    for k, name in enumerate(HELDOUT_FILES):
        files[f"{HELDOUT_DIR}/{name}"] = "".join(s + "\n" for s in sentences(heldout_sentences, seed=100 + k))
    return files


def write_layout(root: Path, **kwargs) -> Path:
    for rel, text in layout_files(**kwargs).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def write_archive(path: Path, **kwargs) -> Path:
    """A .tar.gz laid out like 1-billion-word-language-modeling-benchmark-r13output.tar.gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in layout_files(**kwargs).items():
            blob = text.encode("utf-8")
            info = tarfile.TarInfo(f"{ARCHIVE_TOP}/{rel}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        readme = tarfile.TarInfo(f"{ARCHIVE_TOP}/README")
        readme.size = 2
        tar.addfile(readme, io.BytesIO(b"x\n"))
    return path
