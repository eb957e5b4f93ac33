"""The held-out corpus of the plateau-rule evaluation (issue 16): Spanish-English verse pairs from two Bibles
that Debian packages as SWORD modules, written as a ``task.raw_dir`` folder.

    apt-get install sword-text-sparv sword-text-web libsword-utils      # Reina-Valera 1909, World English Bible
    python scripts/plateau_bible_corpus.py data/raw_bible_es_en          # -> {train,valid,test}.{es,en}
    make heldout-bible                                                   # both steps (apt-get when root)
    python run.py task.raw_dir=data/raw_bible_es_en task.src=es task.tgt=en ...

Source texts (both public domain): ``spaRV1909eb`` (Reina-Valera 1909, Spanish; package sword-text-sparv 2.60-1)
and ``engWEB2015eb`` (World English Bible, package sword-text-web 426.0-1), read with SWORD's ``mod2imp``
(package libsword-utils). Each verse is one entry ``$$$<Book> <chapter>:<verse>`` followed by its OSIS
markup. Text: footnotes (``<note>``) and headings (``<title>``) are dropped with their contents, every other tag
is replaced by a space, whitespace is collapsed (the task's Moses tokenizer splits the punctuation afterwards).
Pairs: the references present, non-empty, in both modules (chapter and verse >= 1). Split (deterministic,
independent of order, as experiments/corpora/ding.py): md5 of the reference, modulo 1000, below 40 -> valid,
below 80 -> test, else train.

Missing packages end the script with one line naming them (``PACKAGES``). ``--sword-path DIR`` reads the modules
from ``DIR/mods.d`` only (SWORD looks in the working directory's ``mods.d`` first): another SWORD library, or an
empty one in the tests.

This is a different corpus from the Ding dictionary in every respect that matters to the rule: another
language pair (es-en), another domain (verse-length prose of 17th-20th century Bibles against short dictionary
examples), other vocabularies.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MODULES = {"es": "spaRV1909eb", "en": "engWEB2015eb"}
PACKAGES = {"spaRV1909eb": "sword-text-sparv", "engWEB2015eb": "sword-text-web", "mod2imp": "libsword-utils"}
INSTALL = "apt-get install " + " ".join(PACKAGES.values()) + " (or `make heldout-bible` as root)"
SPLITS = ("train", "valid", "test")
REFERENCE = re.compile(r"^\$\$\$(.+) (\d+):(\d+)$")
DROPPED = re.compile(r"<(note|title)\b[^>]*?(?<!/)>.*?</\1>", re.S)  # with their contents
TAG = re.compile(r"<[^>]*>")


def read_module(module: str, sword_path: Path | None = None) -> dict[str, str]:
    """reference ("Genesis 1:1") -> plain verse text, from ``mod2imp <module>`` (run in ``sword_path`` if given)."""
    if shutil.which("mod2imp") is None:
        raise SystemExit(f"error: mod2imp not found (package {PACKAGES['mod2imp']}); {INSTALL}")
    if sword_path is not None and not (sword_path / "mods.d").is_dir():
        raise SystemExit(f"error: no SWORD library at {sword_path} (no mods.d/); {INSTALL}")
    env = None if sword_path is None else {**os.environ, "SWORD_PATH": str(sword_path)}
    proc = subprocess.run(["mod2imp", module], capture_output=True, text=True, cwd=sword_path, env=env)
    if proc.returncode != 0 or "$$$" not in proc.stdout:
        raise SystemExit(f"error: SWORD module {module} not found (package {PACKAGES[module]}); {INSTALL}")
    verses, ref, body = {}, None, []
    for line in proc.stdout.splitlines() + ["$$$end 0:0"]:
        m = REFERENCE.match(line)
        if m or line.startswith("$$$"):
            if ref is not None:
                verses[ref] = clean(" ".join(body))
            ref = f"{m.group(1)} {m.group(2)}:{m.group(3)}" if m and int(m.group(2)) >= 1 and int(m.group(3)) >= 1 else None
            body = []
        else:
            body.append(line)
    return {k: v for k, v in verses.items() if v}


def clean(markup: str) -> str:
    text = TAG.sub(" ", DROPPED.sub(" ", markup))
    return " ".join(text.split())


def split_of(reference: str, valid_permille: int = 40, test_permille: int = 40) -> str:
    bucket = int(hashlib.md5(reference.encode()).hexdigest(), 16) % 1000
    return "valid" if bucket < valid_permille else "test" if bucket < valid_permille + test_permille else "train"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the raw_dir to write")
    ap.add_argument("--sword-path", type=Path, help="read the modules from DIR/mods.d only (default: SWORD's "
                                                    "own search, /usr/share/sword for Debian's packages)")
    args = ap.parse_args(argv)
    texts = {lang: read_module(module, args.sword_path) for lang, module in MODULES.items()}
    refs = [r for r in texts["es"] if r in texts["en"]]  # Spanish module order (canonical book order)
    if not refs:
        raise SystemExit("error: the two modules share no verse reference")
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        chosen = [r for r in refs if split_of(r) == split]
        counts[split] = len(chosen)
        for lang in MODULES:
            (args.out / f"{split}.{lang}").write_text("".join(texts[lang][r] + "\n" for r in chosen), encoding="utf-8")
    print(f"wrote {args.out}: " + ", ".join(f"{s} {n}" for s, n in counts.items())
          + f" pairs (es verses {len(texts['es'])}, en verses {len(texts['en'])}, shared {len(refs)})")


if __name__ == "__main__":
    sys.exit(main())
