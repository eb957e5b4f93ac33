"""scripts/fig_lr_sweep.py on run records written by hand (the shape docs/harness.md gives them): rows per run,
the mean and min-max over seeds, and --rows, which merges the rows of a CSV the script wrote before (runs whose
directories are gone) with the runs of the directories given."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import fig_lr_sweep
from tests.conftest import REPO

PPL = {  # (optimizer, lr, seed) -> final valid ppl
    ("radam", 1e-3, 1): 300.0, ("radam", 1e-3, 2): 320.0, ("radam", 1e-3, 3): 340.0,
    ("radam", 5e-3, 1): 160.0, ("radam", 5e-3, 2): 170.0, ("radam", 5e-3, 3): 150.0,
    ("adam_warmup", 1e-3, 1): 190.0, ("adam_warmup", 1e-3, 2): 180.0, ("adam_warmup", 1e-3, 3): 200.0,
    ("adam_warmup", 5e-3, 1): 150.0, ("adam_warmup", 5e-3, 2): 160.0, ("adam_warmup", 5e-3, 3): math.nan,
}


def make_run(sweep: Path, num: int, optimizer: str, lr: float, seed: int, ppl: float) -> None:
    d = sweep / f"{num}_{optimizer}_lr{lr}_seed{seed}"
    d.mkdir(parents=True)
    status = "completed" if math.isfinite(ppl) else "diverged"
    final = {"valid": {"ppl": ppl}} if math.isfinite(ppl) else {}
    (d / "summary.json").write_text(json.dumps({"task": "ding", "optimizer": optimizer, "status": status,
                                                "seed": seed, "updates": 500, "final": final}))
    warmup = 200 if optimizer == "adam_warmup" else 0
    (d / "config_resolved.yaml").write_text(yaml.safe_dump(
        {"optimizer": {"lr": lr, "scheduler": {"warmup_updates": warmup}}}))


def make_sweep(root: Path, seeds: tuple[int, ...]) -> Path:
    for num, (optimizer, lr, seed) in enumerate(k for k in PPL if k[2] in seeds):
        make_run(root, num, optimizer, lr, seed, PPL[optimizer, lr, seed])
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def draw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/fig_lr_sweep.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def cell(stdout: str, variant: str, lr: str) -> list[str]:
    (line,) = [line for line in stdout.splitlines() if line.startswith(variant + " ") and f" {lr} " in line]
    return line.split()


def test_one_row_per_run_and_the_seed_mean_and_range(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", (1, 2, 3))
    done = draw(str(sweep), "--out", str(tmp_path / "out"), "--name", "f")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "out" / "f.csv")
    assert tuple(rows[0]) == fig_lr_sweep.FIELDS and len(rows) == len(PPL)
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert [(r["variant"], r["lr"], r["seed"], r["valid_ppl"]) for r in diverged] == [
        ("adam_warmup (200)", "0.005", "3", "")]
    assert cell(done.stdout, "radam", "1e-03")[2:5] == ["320.0", "300.0", "340.0"]  # mean, min, max of 3 seeds
    assert cell(done.stdout, "adam_warmup", "5e-03")[3:8] == ["155.0", "150.0", "160.0", "2", "completed;"]
    assert (tmp_path / "out" / "f.png").stat().st_size > 0 and (tmp_path / "out" / "f.pdf").exists()


def test_rows_of_an_earlier_csv_are_merged_with_the_new_runs(tmp_path):
    """Seeds 1-2 survive only as the CSV of an earlier drawing; seed 3's directories are new: the figure, the
    CSV and the report cover all three seeds, and equal a drawing made from all nine directories."""
    old = make_sweep(tmp_path / "seeds12", (1, 2))
    assert draw(str(old), "--out", str(tmp_path / "results"), "--name", "f").returncode == 0
    new = make_sweep(tmp_path / "seed3", (3,))
    done = draw(str(new), "--rows", str(tmp_path / "results" / "f.csv"), "--out", str(tmp_path / "results"),
                "--name", "f")  # rewrites the CSV it read
    assert done.returncode == 0, done.stderr
    merged = read_csv(tmp_path / "results" / "f.csv")
    assert sorted((r["variant"], float(r["lr"]), int(r["seed"])) for r in merged) == sorted(
        (f"{o} (200)" if o == "adam_warmup" else o, lr, s) for o, lr, s in PPL)
    assert cell(done.stdout, "radam", "1e-03")[2:5] == ["320.0", "300.0", "340.0"]
    reference = draw(str(old), str(new), "--out", str(tmp_path / "reference"), "--name", "f")
    assert merged == read_csv(tmp_path / "reference" / "f.csv")
    assert done.stdout.splitlines()[:-1] == reference.stdout.splitlines()[:-1]  # all but the "wrote ..." line


def test_a_run_directory_replaces_the_csv_row_of_the_same_run(tmp_path):
    old = make_sweep(tmp_path / "seeds12", (1, 2))
    assert draw(str(old), "--out", str(tmp_path / "a"), "--name", "f").returncode == 0
    rerun = tmp_path / "rerun"
    make_run(rerun, 0, "radam", 1e-3, 2, 400.0)  # seed 2 of radam at 1e-3 again, with another result
    done = draw(str(rerun), "--rows", str(tmp_path / "a" / "f.csv"), "--out", str(tmp_path / "b"), "--name", "f")
    assert done.returncode == 0, done.stderr
    assert "1 row(s) of" in done.stdout and "replaced by the run directories" in done.stdout
    rows = [r for r in read_csv(tmp_path / "b" / "f.csv") if r["variant"] == "radam" and r["lr"] == "0.001"]
    assert [(r["seed"], r["valid_ppl"]) for r in rows] == [("1", "300.0"), ("2", "400.0")]


def test_rows_alone_redraw_the_figure(tmp_path):
    old = make_sweep(tmp_path / "all", (1, 2, 3))
    assert draw(str(old), "--out", str(tmp_path / "a"), "--name", "f").returncode == 0
    done = draw("--rows", str(tmp_path / "a" / "f.csv"), "--out", str(tmp_path / "b"), "--name", "f")
    assert done.returncode == 0, done.stderr
    assert read_csv(tmp_path / "b" / "f.csv") == read_csv(tmp_path / "a" / "f.csv")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("a,b\n1,2\n", "is not a CSV of scripts/fig_lr_sweep.py"),
    (",".join(fig_lr_sweep.FIELDS) + "\nradam,radam,0,fast,1,completed,500,3.0,x\n", "line 2"),
])
def test_a_bad_rows_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "rows.csv"
    if content is not None:
        path.write_text(content)
    done = draw("--rows", str(path), "--out", str(tmp_path / "out"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        done.stderr
