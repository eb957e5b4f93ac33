"""scripts/plateau_heldout.py: the hit-rate table of the plateau warning, on hand-made run directories whose
labels, rule outcomes and unigram loss are worked out here independently; and the rule it applies is the loop's.
scripts/plateau_bible_corpus.py: one line naming the Debian packages when they are missing (needs none of them)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from experiments.diagnostics_log import SMALL_GRAD_FRACTION, DiagnosticsLog, plateau_rule
from scripts import plateau_heldout

# a 4-type target vocabulary after the 4 specials: V = 8; train target tokens (ids) with known counts
COUNTS = {2: 10, 4: 50, 5: 25, 6: 10, 7: 5}  # </s> = 2 and four words; <s>, <pad>, <unk> never occur


def _prepared(root: Path) -> Path:
    d = root / "ding"
    (d / "bin").mkdir(parents=True)
    (d / "dict.en.txt").write_text("a 50\nb 25\nc 10\nd 5\n")
    tokens = torch.tensor([t for t, n in COUNTS.items() for _ in range(n)], dtype=torch.int32)
    torch.save({"tokens": tokens, "offsets": torch.tensor([0, len(tokens)])}, d / "bin" / "train.en.pt")
    return d


def _expected_unigram_loss(epsilon: float = 0.1) -> float:
    total = sum(COUNTS.values())
    m = [(1 - epsilon) * COUNTS.get(i, 0) / total + epsilon / 8 for i in range(8)]
    return -sum(x * math.log(x) for x in m)


def _run(sweep: Path, name: str, optimizer: str, seed: int, losses: float, fractions: dict[int, list[float]],
         data_root: Path, updates: int = 1000, status: str = "completed") -> Path:
    """A run dir: train loss `losses` at every logged update; diagnostics at each update of `fractions`
    (module fractions, one module per value)."""
    d = sweep / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"task": "ding", "optimizer": optimizer, "status": status,
                                                "seed": seed, "updates": updates}))
    cfg = {"task": {"corpus": "ding", "raw_dir": None, "src": "de", "tgt": "en", "data_root": str(data_root),
                    "data_dir": None, "label_smoothing": 0.1}, "optimizer": {"name": optimizer, "lr": 1e-3},
           "model": {"pre_ln": False}}
    (d / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"split": "train", "update": u, "loss": losses}) + "\n"
                                             for u in range(10, updates + 1, 10)))
    (d / "diagnostics.jsonl").write_text("".join(
        json.dumps({"update": u, "epoch": 1, "modules": {f"m{i}": {"grad_small_frac": f} for i, f in enumerate(fs)}})
        + "\n" for u, fs in sorted(fractions.items())))
    return d


def test_labels_outcomes_and_counts(tmp_path):
    root = tmp_path / "data"
    _prepared(root)
    l_uni = _expected_unigram_loss()
    sweep = tmp_path / "sweep"
    low, high = [0.0, 0.01, 0.02], [0.0, 0.3, 0.4]  # medians 0.01 (silent) and 0.3 (fires)
    # fires from update 50 on, ends on the plateau (0.1 below L_uni): TP at 50/100, FN at 25
    _run(sweep, "v1", "adam_vanilla", 1, l_uni - 0.1, {25: low, 50: high, 100: high}, root)
    # fires at 25 only and trains (1.2 below): FP at 25, TN at 50/100; first fire 25
    _run(sweep, "r1", "radam", 1, l_uni - 1.2, {25: high, 50: low, 100: low}, root)
    # never fires, plateau, borderline (0.45 below: within 0.2 of the 0.5 line): FN everywhere
    _run(sweep, "e1", "adam_eps", 1, l_uni - 0.45, {25: low, 50: low, 100: low}, root)
    # stopped at 400 updates: unfinished, out of the counts
    _run(sweep, "w1", "adam_warmup", 1, l_uni - 2.0, {25: low, 50: low, 100: low}, root, updates=400)
    out = tmp_path / "out"
    plateau_heldout.main([str(sweep), "--out", str(out), "--name", "t"])
    rows = {r["variant"]: r for r in csv.DictReader((out / "t.csv").open())}
    assert float(rows["adam_vanilla"]["l_uni"]) == pytest.approx(l_uni, abs=1e-4)
    assert [rows["adam_vanilla"][f"outcome_U{u}"] for u in (25, 50, 100)] == ["FN", "TP", "TP"]
    assert rows["adam_vanilla"]["first_fire"] == "50" and rows["adam_vanilla"]["label"] == "plateau"
    assert [rows["radam"][f"outcome_U{u}"] for u in (25, 50, 100)] == ["FP", "TN", "TN"]
    assert rows["radam"]["first_fire"] == "25" and rows["radam"]["label"] == "trains"
    assert rows["adam_eps"]["label"] == "plateau" and rows["adam_eps"]["borderline"] == "True"
    assert rows["adam_eps"]["first_fire"] == "" and rows["adam_eps"]["outcome_U50"] == "FN"
    assert rows["adam_warmup"]["label"] == "unfinished" and rows["adam_warmup"]["outcome_U50"] == ""
    table = (out / "t_table.md").read_text()
    name = "ding de-en lr 0.001"
    assert f"| {name} | 25 | 0 | 1 | 2 | 0 | 3 |" in table  # TP FP FN TN runs at U = 25
    assert f"| {name} | 50 | 1 | 0 | 1 | 1 | 3 |" in table


def test_the_table_applies_the_loops_rule():
    """plateau_rule is what DiagnosticsLog.plateau_warning fires on, at the threshold and either side of it."""
    log = DiagnosticsLog.__new__(DiagnosticsLog)
    log.warn_at, log.interval = 50, 5
    for fractions in ([0.0, SMALL_GRAD_FRACTION, 1.0], [0.0, SMALL_GRAD_FRACTION - 1e-9, 1.0], [0.2], [None, 0.0]):
        modules = {f"m{i}": {"grad_small_frac": f} for i, f in enumerate(fractions)}
        warned = log.plateau_warning({"update": 50, "modules": modules}) is not None
        assert plateau_rule(modules)[1] == warned
    assert plateau_rule({"a": {"grad_small_frac": None}}) == (None, False)
    assert plateau_rule({"a": {"grad_small_frac": 0.04}, "b": {"grad_small_frac": 0.06}}) == (0.05, True)


def test_no_diagnostics_is_one_line_error(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"task": "ding", "optimizer": "radam", "status": "completed",
                                                "seed": 1, "updates": 10}))
    with pytest.raises(SystemExit):
        plateau_heldout.main([str(d)])
    assert "trainer.diagnostics_interval" in capsys.readouterr().err


# scripts/plateau_bible_corpus.py without its Debian packages: one line naming all three, nothing written.
BIBLE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plateau_bible_corpus.py"
BIBLE_PACKAGES = ("sword-text-sparv", "sword-text-web", "libsword-utils")


def _bible_corpus(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BIBLE_SCRIPT), *args], capture_output=True, text=True, env=env)


def _assert_names_the_packages(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(p in lines[0] for p in BIBLE_PACKAGES), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("library", ["empty", "absent"])
def test_bible_corpus_without_modules_names_the_packages(tmp_path, library):
    """An empty SWORD library (mods.d/ with no module) or none at all: the modules' packages are missing."""
    lib = tmp_path / "sword"
    if library == "empty":
        (lib / "mods.d").mkdir(parents=True)
    out = tmp_path / "raw_bible"
    _assert_names_the_packages(_bible_corpus([str(out), "--sword-path", str(lib)]), out)


def test_bible_corpus_without_mod2imp_names_the_packages(tmp_path):
    out = tmp_path / "raw_bible"
    env = {**os.environ, "PATH": str(tmp_path)}  # no mod2imp on PATH (libsword-utils missing)
    _assert_names_the_packages(_bible_corpus([str(out)], env=env), out)
