"""scripts/tables.py: Tables 1-3 from run records, checked against the records themselves.

Table 2's cells come from REAL tiny runs of the NMT task on the Ding corpus through run.py (RAdam: two completed
seeds; Adam-warmup: one completed, one diverged by a real trainer.diverge_loss_above, two failed by a real
config error). Tables 1 and 3 have no runnable CPU data here, so their run directories are written by the
harness's own writers (experiments.records: provenance, write_json, atomic_write_text) with the real composed
configs (configs/experiment/four_step.yaml etc.), in the format experiments/loop.py and run.py write. Means and
standard deviations are recomputed here with numpy from the summary files, independently of the script.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments import records
from scripts import tables
from tests.conftest import REPO, TINY_NMT, compose_cfg, run_py

DING_ROW = "Ding De-En (CPU corpus, not in the paper)"
SHORT = [*TINY_NMT, "trainer.max_updates=3", "trainer.grad_histogram_updates=[]"]


@pytest.fixture(scope="module")
def ding_runs(ding_data, tmp_path_factory) -> Path:
    """Real run directories from two sweeps (two processes: run.py's start-up dominates on 2 CPUs).

    sweep A: radam seeds 1, 2 complete; adam_warmup seeds 1, 2 fail (a real config error: Ding's 400 warmup
    updates exceed the 3 updates). sweep B: adam_warmup seed 3 with 2 warmup updates, once completed and once
    diverged (trainer.diverge_loss_above=1.0 is below the first loss)."""
    root = tmp_path_factory.mktemp("table_runs")
    run_py("-m", *SHORT, "optimizer=radam,adam_warmup", "seed=1,2", f"hydra.sweep.dir={root / 'a'}",
           data_root=ding_data)
    run_py("-m", *SHORT, "optimizer=adam_warmup", "seed=3", "optimizer.scheduler.warmup_updates=2",
           "trainer.diverge_loss_above=null,1.0", f"hydra.sweep.dir={root / 'b'}", data_root=ding_data)
    return root


def write_run(run_dir: Path, overrides: list[str], status: str, *, best: float | None = None,
              test: dict | None = None, error: str | None = None) -> dict:
    """A run directory as the harness writes it: config_resolved.yaml (loop), summary.json (loop / run.py)."""
    cfg = compose_cfg(*overrides)
    choices = {"task": next(o for o in overrides if o.startswith("task=")).split("=")[1],
               "optimizer": next(o for o in overrides if o.startswith("optimizer=")).split("=")[1]}
    summary = {**choices, "status": status, "run_dir": str(run_dir),
               **records.provenance(cfg.seed, "cuda:0" if status != "failed" else "", REPO), "world_size": 1}
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes before the job starts
    if status == "failed":  # run.py's record_failure before training: no config_resolved.yaml
        summary["error"] = error
    else:
        records.atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        t = cfg.trainer
        summary.update(updates=64124, epochs=164, wall_time_s=3600.0,
                       final={"train": {"loss": 0.1}, "valid": {t.best_metric: best},
                              **({"test": test} if status == "completed" else {})},
                       best={"metric": t.best_metric, "mode": t.best_mode, "value": best, "update": 60000})
    records.write_json(run_dir / "summary.json", summary)
    return summary


@pytest.fixture(scope="module")
def written_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("written_runs")
    cifar = ["task=cifar10", "model=resnet20"]
    for seed, acc in ((1, 91.2), (2, 91.62), (3, 90.91)):  # SGD lr 0.1: the better of two settings
        write_run(root / f"sgd_01_{seed}", [*cifar, "optimizer=sgd", f"seed={seed}"], "completed", best=acc)
    for seed, acc in ((1, 89.0), (2, 89.5)):
        write_run(root / f"sgd_003_{seed}", [*cifar, "optimizer=sgd", "optimizer.lr=0.03", f"seed={seed}"],
                  "completed", best=acc)
    write_run(root / "radam_1", [*cifar, "optimizer=radam", "seed=1"], "completed", best=91.4)
    write_run(root / "radam_2", [*cifar, "optimizer=radam", "seed=2"], "diverged", best=None)
    write_run(root / "adam_2k_1", [*cifar, "optimizer=adam_2k", "seed=1"], "completed", best=90.0)  # no table
    four = ["experiment=four_step", "task=cifar10", "optimizer=radam"]
    for seed, acc in ((1, 90.1), (2, 89.7)):
        write_run(root / f"four_adam_{seed}", [*four, "optimizer.first_steps=[[adam,4]]", f"seed={seed}"],
                  "completed", best=acc)
    write_run(root / "four_plain_1", [*four, "seed=1"], "failed", error="CUDA out of memory; lower batch_size")
    lm = ["task=lm1b", "model=lstm_lm"]
    for seed, ppl in ((1, 37.5), (2, 36.8)):
        write_run(root / f"lm_{seed}", [*lm, "optimizer=adam_vanilla", f"seed={seed}"], "completed",
                  best=3.7, test={"test_loss": 3.6, "test_ppl": ppl})
    return root


@pytest.fixture(scope="module")
def made(ding_runs, written_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    assert tables.main([str(ding_runs), str(written_runs), "--out", str(out)]) == 0
    rows = {}
    for name in ("table1", "table2", "table3"):
        with open(out / f"{name}.csv", newline="") as f:
            for r in csv.DictReader(f):
                rows.setdefault((name, r["row"], r["column"]), []).append(r)
    return (out / "tables.md").read_text(), rows


def summaries(*dirs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for d in dirs for p in sorted(d.rglob("summary.json"))]


def shown(rows, key) -> dict:
    [row] = [r for r in rows[key] if r["shown"] == "True"]
    return row


def md_line(md: str, *cells: str) -> str:
    [line] = [line for line in md.splitlines() if all(f"| {c} |" in line for c in cells)]
    return line


def test_ding_cells_equal_the_real_runs(ding_runs, made):
    md, rows = made
    radam = [s for s in summaries(ding_runs) if s["optimizer"] == "radam"]
    assert [s["status"] for s in radam] == ["completed", "completed"]
    bleu = np.array([s["final"]["test"]["bleu"] for s in radam])
    sacre = np.array([s["final"]["test"]["sacrebleu"] for s in radam])
    row = shown(rows, ("table2", DING_ROW, "RAdam"))
    assert float(row["mean"]) == pytest.approx(bleu.mean()) and float(row["std"]) == pytest.approx(bleu.std(ddof=1))
    assert (row["n"], row["runs"]) == ("2", "2")
    assert row["ours"] == f"{bleu.mean():.2f} +- {bleu.std(ddof=1):.3f} (n=2)"
    assert row["sacrebleu"] == f"{sacre.mean():.2f} +- {sacre.std(ddof=1):.3f}"
    assert "ding; TransformerModel(encoder_layers=1, decoder_layers=1, embed_dim=32" in row["scale"]
    assert "; 3 updates; cpu" in row["scale"]
    assert row["ours"] in md_line(md, DING_ROW, "RAdam")


def test_diverged_and_failed_runs_are_shown_not_dropped(ding_runs, made):
    md, rows = made
    warm = [s for s in summaries(ding_runs) if s["optimizer"] == "adam_warmup"]
    assert sorted(s["status"] for s in warm) == ["completed", "diverged", "failed", "failed"]
    assert all("warmup_updates" in s["error"] for s in warm if s["status"] == "failed")
    [done] = [s for s in warm if s["status"] == "completed"]
    row = shown(rows, ("table2", DING_ROW, "Adam+warmup"))
    assert row["ours"] == f"{done['final']['test']['bleu']:.2f} (n=1); diverged (1/4); failed (2/4)"
    assert (row["diverged"], row["failed"], row["runs"]) == ("1", "2", "4")
    assert row["ours"] in md_line(md, DING_ROW, "Adam+warmup")
    radam = shown(rows, ("table1", "CIFAR-10", "RAdam"))
    assert radam["ours"] == "91.40 (n=1); diverged (1/2)"
    step = shown(rows, ("table3", "RAdam throughout", "RAdam"))
    assert step["ours"] == "failed (1/1)" and step["paper"] == "91.08"


def test_best_lr_setting_is_shown_and_every_setting_is_in_the_csv(made):
    md, rows = made
    sgd = rows[("table1", "CIFAR-10", "SGD")]
    assert sorted(float(r["lr"]) for r in sgd) == [0.03, 0.1]
    best = np.array([91.2, 91.62, 90.91])
    row = shown(rows, ("table1", "CIFAR-10", "SGD"))
    assert float(row["lr"]) == 0.1 and row["paper"] == "91.51"
    assert float(row["mean"]) == pytest.approx(best.mean()) and float(row["std"]) == pytest.approx(best.std(ddof=1))
    assert f"{best.mean():.2f} +- {best.std(ddof=1):.3f} (n=3)" in md_line(md, "CIFAR-10", "SGD")
    assert "0.1 (best of 2)" in md_line(md, "CIFAR-10", "SGD")
    assert "cifar10; resnet_cifar(depth=20)" in row["scale"] and "64124 updates; cuda:0" in row["scale"]


def test_table3_cells_come_from_first_steps_and_lm_from_test_ppl(made):
    md, rows = made
    adam = shown(rows, ("table3", "Adam in steps 1-4, then RAdam", "RAdam"))
    acc = np.array([90.1, 89.7])
    assert adam["ours"] == f"{acc.mean():.2f} +- {acc.std(ddof=1):.3f} (n=2)" and adam["paper"] == "89.98"
    assert shown(rows, ("table3", "SGD in steps 1-4, Adam in 5-8, then RAdam", "RAdam"))["ours"] == "not run"
    ppl = np.array([37.5, 36.8])
    lm = shown(rows, ("table1", "One Billion Word", "Adam"))
    assert lm["ours"] == f"{ppl.mean():.2f} +- {ppl.std(ddof=1):.3f} (n=2)" and lm["paper"] == "36.92"
    # four_step runs are Table 3 only: Table 1's CIFAR RAdam cell holds just the two plain RAdam runs
    assert shown(rows, ("table1", "CIFAR-10", "RAdam"))["runs"] == "2"
    for cell in (("ImageNet", "SGD"), ("IWSLT'14 De-En", "RAdam")):
        assert "| not run |" in md_line(md, *cell)
    assert "34.76 +- 0.003" in md_line(md, "IWSLT'14 De-En", "RAdam")
    assert "Runs in no table (1): cifar10/adam_2k completed x1" in md


def test_missing_directory_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tables.main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err
