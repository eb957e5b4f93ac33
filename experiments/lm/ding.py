"""The offline language-modelling corpus: the English side of the Ding dictionary's sentence pairs
(experiments/corpora/ding.py; /usr/share/trans/de-en) written in the One Billion Word layout, so that it goes
through exactly the pipeline of the real benchmark (experiments/lm/data.py)::

    <root>/training-monolingual.tokenized.shuffled/news.en-0000K-of-0000N     N training shards
    <root>/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00002   test
    <root>/heldout-monolingual.tokenized.shuffled/news.en.heldout-00001-of-00002   valid

Text steps, as in One Billion Word: Moses tokenization (sacremoses, English, no escaping), case kept, one
sentence per line, duplicate sentences removed. Split: the md5 of the English sentence (``split_of``), so
a sentence and its duplicates never straddle train and test; training sentences go round-robin into the shards
in the dictionary's order. The 2023-01-30 file gives 19,943 English sentences: 18,277 train, 807 valid, 859
test; with words seen <= 3 times as ``<unk>``: 3,973 vocabulary entries, 189,494 training tokens (``</s>``
included; 8.6% ``<unk>``), 8,742 valid and 9,039 test tokens.
"""

from __future__ import annotations

from pathlib import Path

from sacremoses import MosesTokenizer

from experiments.corpora.ding import parse_ding, read_ding_file, split_of
from experiments.lm.data import HELDOUT_DIR, TRAIN_DIR
from experiments.task import DataError

SPLIT_FILES = {"test": "news.en.heldout-00000-of-00002", "valid": "news.en.heldout-00001-of-00002"}


def english_sentences(ding_file: Path) -> list[str]:
    """Tokenized English sides of the Ding pairs, in file order, without duplicates."""
    tokenizer = MosesTokenizer(lang="en")
    seen, sentences = set(), []
    for _, english in parse_ding(read_ding_file(ding_file)):
        line = tokenizer.tokenize(english, escape=False, return_str=True)
        if line not in seen:
            seen.add(line)
            sentences.append(line)
    return sentences


def write_ding_layout(ding_file: Path, root: Path, train_shards: int, valid_permille: int = 40,
                      test_permille: int = 40) -> dict:
    """Write the English Ding corpus into ``root`` in the One Billion Word layout; return sentence counts."""
    sentences = english_sentences(Path(ding_file))
    if not sentences:
        raise DataError(f"no sentences found in {ding_file}; is it the Ding de-en dictionary?")
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for line in sentences:
        splits[split_of(line, valid_permille, test_permille)].append(line)
    files = {f"{HELDOUT_DIR}/{name}": splits[split] for split, name in SPLIT_FILES.items()}
    for k in range(train_shards):
        files[f"{TRAIN_DIR}/news.en-{k:05d}-of-{train_shards:05d}"] = splits["train"][k::train_shards]
    for rel, lines in files.items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {split: len(lines) for split, lines in splits.items()}
