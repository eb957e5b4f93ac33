"""Small NMT corpora in exactly the real on-disk formats, for tests (no network, no real data needed).

- ``write_iwslt_archive(dir)``: ``dir/de-en.tgz`` laid out as the WIT3 2014-01 archive: ``de-en/train.tags.de-en.
  {de,en}`` (talk metadata tag lines + text lines) and the five ``de-en/IWSLT14.TED*.de-en.{de,en}.xml`` test
  files (``<seg id="N"> ... </seg>`` lines inside ``<doc>``).
- ``write_ding_file(path)``: lines in the Ding dictionary format (``de | de :: en | en``), hand-written.
- ``write_raw_corpus(dir, src, tgt)``: ``{train,valid,test}.{src,tgt}`` raw text, one sentence per line.

The sentences are generated from small word lists so a corpus has a realistic mix of lengths and repeated words.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

from experiments.nmt.iwslt import TEST_SETS

_DE = ["das", "Haus", "ist", "groß", "und", "der", "Hund", "läuft", "schnell", "über", "die", "Straße", "heute",
       "wir", "sehen", "einen", "Baum", "im", "Garten", "sie", "spricht", "mit", "ihrem", "Freund"]
_EN = ["the", "house", "is", "big", "and", "dog", "runs", "fast", "across", "street", "today", "we", "see", "a",
       "tree", "in", "garden", "she", "speaks", "with", "her", "friend", "quickly", "there"]


def parallel_sentences(n: int, seed: int = 0, min_words: int = 3, max_words: int = 12) -> list[tuple[str, str]]:
    """n (German, English) pseudo-sentences with equal word counts (so clean-corpus keeps them)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        k = rng.randint(min_words, max_words)
        de = " ".join(rng.choice(_DE) for _ in range(k))
        en = " ".join(rng.choice(_EN) for _ in range(k))
        pairs.append((f"{de.capitalize()} {i}.", f"{en.capitalize()} {i}."))
    return pairs


def _talk_header(lang: str, talk: int) -> list[str]:
    title = {"de": f"Sprecherin {talk}: Ein Vortrag über Häuser", "en": f"Speaker {talk}: A talk about houses"}[lang]
    desc = {"de": "TED Talk Untertitel und Transkript: Eine Geschichte.",
            "en": "TED Talk Subtitles and Transcript: A story."}[lang]
    return [
        f"<url>http://www.ted.com/talks/lang/{lang}/speaker_{talk}.html</url>",
        f"<keywords>talks, design, houses, {lang}</keywords>",
        f"<speaker>Speaker {talk}</speaker>",
        f"<talkid>{100 + talk}</talkid>",
        f"<title>{title}</title>",
        f"<description>{desc}</description>",
    ]


def iwslt_train_lines(n_talks: int = 3, per_talk: int = 30) -> dict[str, list[str]]:
    """train.tags.de-en.{de,en}: per talk a header of tag lines, then text lines; a few pairs clean-corpus drops."""
    lines = {"de": [], "en": []}
    pairs = parallel_sentences(n_talks * per_talk, seed=1)
    for t in range(n_talks):
        for lang in ("de", "en"):
            lines[lang] += _talk_header(lang, t)
        for j, (de, en) in enumerate(pairs[t * per_talk:(t + 1) * per_talk]):
            if j == 5:  # ratio > 1.5 after tokenization: dropped by clean-corpus-n
                de = de + " " + " ".join(["sehr"] * 12)
            if j == 7:  # more than 175 words: dropped
                de, en = " ".join(["Haus"] * 180) + ".", " ".join(["house"] * 180) + "."
            lines["de"].append("  " + de if j == 3 else de)  # stray whitespace, as in the real files
            lines["en"].append(en)
    return lines


def iwslt_xml(lang: str, set_name: str, segments: list[str]) -> str:
    kind = "srcset" if lang == "de" else "refset"
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>",
           f'<{kind} setid="{set_name}" srclang="german" trglang="english">',
           '<doc docid="535" genre="lectures">',
           "<url>http://www.ted.com/talks/some_talk.html</url>",
           "<description>TED Talk Subtitles and Transcript: a description.</description>",
           "<keywords>talks, science</keywords>", "<talkid>535</talkid>", "<title>A title: of the talk</title>"]
    out += [f'<seg id="{i}"> {text} </seg>' for i, text in enumerate(segments, 1)]
    out += ["</doc>", f"</{kind}>", "</mteval>"]
    return "\n".join(out) + "\n"


def iwslt_test_segments(per_set: int = 4) -> dict[str, dict[str, list[str]]]:
    """{set name: {lang: segments}}; includes a ’ (the recipe turns it into ') and Moses-escaped characters."""
    pairs = parallel_sentences(per_set * len(TEST_SETS), seed=2)
    out = {}
    for s, name in enumerate(TEST_SETS):
        chunk = pairs[s * per_set:(s + 1) * per_set]
        out[name] = {"de": [p[0] for p in chunk], "en": [p[1] for p in chunk]}
    out[TEST_SETS[0]]["en"][0] = "It\u2019s the \"house\" & the garden."
    out[TEST_SETS[0]]["de"][0] = "Es ist das \"Haus\" & der Garten."
    return out


def write_iwslt_archive(directory: Path, n_talks: int = 3, per_talk: int = 30) -> Path:
    """Write ``directory/de-en.tgz`` in the WIT3 2014-01 layout; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for lang, lines in iwslt_train_lines(n_talks, per_talk).items():
        files[f"de-en/train.tags.de-en.{lang}"] = "\n".join(lines) + "\n"
    for name, by_lang in iwslt_test_segments().items():
        for lang, segs in by_lang.items():
            files[f"de-en/{name}.de-en.{lang}.xml"] = iwslt_xml(lang, name, segs)
    files["de-en/README"] = "IWSLT 2014 evaluation campaign: training/development for the MT track\n"
    path = directory / "de-en.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


DING_LINES = [
    "# Version :: test 2026-01-01",
    "# License :: GPL Version 2 or later; GNU General Public License",
    "Haus {n}; Gebäude {n} [arch.] | Häuser {pl} | Das Haus ist sehr groß. :: house; building | houses | "
    "The house is very big.",
    "Hund {m} [zool.] | Hunde {pl} | Der Hund läuft schnell über die Straße! :: dog | dogs | "
    "The dog runs fast across the street!",
    "sehen {vt} | sehend | Siehst du den Baum im Garten? :: to see | seeing | Do you see the tree in the garden?",
    "Es regnet.; Es gießt. [ugs.] :: It is raining.; It is pouring. [coll.]",
    "Freund {m} | Sie spricht mit ihrem Freund. <Freundin> :: friend | She speaks with her friend.",
    "Mismatch {m} | Das hat nur eine Seite. :: mismatch",
    "lower case sentence. :: lower case sentence.",
    "Bis morgen … :: See you tomorrow …",
    "Er sagt „Hallo“. :: He says “hello”.",
    "Das ist’s. :: That’s it.",
    "Das Haus ist sehr groß. :: The house is very big.",
]


def write_ding_file(path: Path, extra_pairs: int = 0) -> Path:
    """The hand-written DING_LINES plus ``extra_pairs`` generated sentence entries, in the Ding format."""
    lines = list(DING_LINES)
    for de, en in parallel_sentences(extra_pairs, seed=3):
        lines.append(f"{de.split()[0]} {{n}} | {de} :: {en.split()[0].lower()} | {en}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def write_raw_corpus(directory: Path, src: str = "fr", tgt: str = "en", sizes=(120, 10, 12)) -> Path:
    """``{train,valid,test}.{src,tgt}`` (the German word list stands in for ``src``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(zip(("train", "valid", "test"), sizes)):
        pairs = parallel_sentences(n, seed=10 + seed)
        (directory / f"{split}.{src}").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (directory / f"{split}.{tgt}").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    return directory
