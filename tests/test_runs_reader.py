"""scripts/runs.py, the one reader of run records: real run directories, cut lines, non-finite numbers, errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.loop import train
from scripts.runs import find_runs, read_jsonl
from tests.conftest import REGRESSION, REPO, compose_cfg


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A folder holding two real runs of the regression task (seeds 1 and 2), as a sweep would."""
    root = tmp_path_factory.mktemp("sweep")
    for seed in (1, 2):
        cfg = compose_cfg(*REGRESSION, "optimizer=radam", "trainer.max_updates=6", "trainer.log_interval=2",
                          "trainer.grad_histogram_updates=[1,5]", f"seed={seed}")
        train(cfg, root / f"{seed - 1}_regression_radam_seed{seed}")
    return root


def raw_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_reads_every_run_with_summary_config_events_and_histograms(sweep):
    runs = find_runs([sweep])
    assert [r.dir.name for r in runs] == ["0_regression_radam_seed1", "1_regression_radam_seed2"]
    for run, seed in zip(runs, (1, 2)):
        assert (run.optimizer, run.status, run.seed) == ("radam", "completed", seed)
        assert run.task == run.summary["task"] and "regression" in run.task.lower()  # in-process: the _target_
        assert run.config["optimizer"]["name"] == "radam" and run.config["seed"] == seed
        assert run.events() == raw_lines(run.dir / "metrics.jsonl")  # every line, in order, nothing added
        assert [e["update"] for e in run.events("train")] == [2, 4, 6]
        assert [h["update"] for h in run.histograms()] == [1, 5]
    assert runs[0].events("train")[0]["loss"] != runs[1].events("train")[0]["loss"]


def test_a_run_directory_itself_and_several_paths(sweep):
    one = sweep / "0_regression_radam_seed1"
    assert [r.dir for r in find_runs([one])] == [one]
    assert len(find_runs([one, sweep / "1_regression_radam_seed2"])) == 2


def test_a_cut_trailing_line_is_skipped_and_nonfinite_strings_become_floats(sweep, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep / "0_regression_radam_seed1", run_dir)
    metrics = run_dir / "metrics.jsonl"
    whole = raw_lines(metrics)
    with open(metrics, "a") as f:
        f.write(json.dumps({"update": 7, "epoch": 1, "split": "train", "loss": "nan", "gnorm": "inf",
                            "lr": "-inf"}) + "\n")
        f.write('{"update": 8, "epoch": 1, "split": "tra')  # a kill in the middle of a write
    events = find_runs([run_dir])[0].events()
    assert events[:-1] == whole and len(events) == len(whole) + 1
    last = events[-1]
    assert math.isnan(last["loss"]) and last["gnorm"] == math.inf and last["lr"] == -math.inf
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_missing_or_empty_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass a run or sweep directory"):
        find_runs([tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="no run under"):
        find_runs([tmp_path])
    for script in ("scripts/fig_warmup_study.py", "scripts/fig_grad_histograms.py"):
        done = subprocess.run([sys.executable, script, str(tmp_path / "nowhere")], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
