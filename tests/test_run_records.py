"""Run records people can trust: a run directory belongs to one config and one process, checkpoints load with
weights_only=True, interrupted writes leave nothing behind, signals end runs resumably, bad input gets one line."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import checkpoint, rundir
from experiments.nmt.average import average_checkpoints
from experiments.nmt.dictionary import Dictionary
from experiments.task import UserError
from experiments.trainer_options import divergence_bound
from tests.conftest import REGRESSION, REPO, TINY_NMT, RunsCode, events, run_env, run_py, summary

QUICK = [*REGRESSION, "trainer.max_updates=20", "trainer.log_interval=5", "trainer.save_interval_updates=5"]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (but the log Hydra appends to and the lock) -> its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.suffix != ".log" and p.name != ".lock"}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- a run dir belongs to one config

def test_a_rerun_with_another_config_is_refused_and_changes_nothing(tmp_path):
    run_py(*QUICK, f"hydra.run.dir={tmp_path}")
    before = snapshot(tmp_path)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "fingerprint.json"} <= set(before)
    proc = run_py(*QUICK, "optimizer=adam_vanilla", "trainer.max_updates=30", f"hydra.run.dir={tmp_path}",
                  check=False)
    line = one_error_line(proc)
    assert "holds a run of another configuration" in line and "optimizer.name: \"radam\" -> \"adam_vanilla\"" in line
    assert "+resume=force" in line
    assert snapshot(tmp_path) == before  # summary.json, .hydra/, metrics.jsonl, checkpoints: byte for byte


def test_extending_a_run_and_logging_keys_may_change_on_resume(tmp_path):
    run_py(*QUICK, f"hydra.run.dir={tmp_path}")
    run_py(*QUICK, "trainer.max_updates=30", "trainer.log_interval=10", "trainer.threads=2",
           f"hydra.run.dir={tmp_path}")
    assert summary(tmp_path)["updates"] == 30 and summary(tmp_path)["status"] == "completed"


def test_resume_force_continues_with_the_new_config_and_records_it(tmp_path):
    run_py(*QUICK, "trainer.max_updates=10", f"hydra.run.dir={tmp_path}")
    run_py(*QUICK, "optimizer.lr=3e-4", "+resume=force", f"hydra.run.dir={tmp_path}")
    assert summary(tmp_path)["updates"] == 20
    assert json.loads((tmp_path / "fingerprint.json").read_text())["config"]["optimizer.lr"] == "0.0003"


def test_a_reordered_sweep_maps_no_config_onto_another_run(tmp_path):
    sweep = [*QUICK, f"hydra.sweep.dir={tmp_path}"]
    run_py("-m", *sweep, "optimizer.lr=1e-3,3e-4")
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    before = {d.name: snapshot(d) for d in dirs}
    proc = run_py("-m", *sweep, "optimizer.lr=3e-4,1e-3", check=False)
    assert proc.stderr.count("holds a run of another configuration") == 2, proc.stderr[-3000:]
    assert {d.name: snapshot(d) for d in dirs} == before
    rerun = run_py("-m", *sweep, "optimizer.lr=1e-3,3e-4")  # the same sweep again: resumes (nothing to do)
    assert "another configuration" not in rerun.stderr


def test_a_second_process_on_the_run_dir_gets_one_line(tmp_path):
    with rundir.claim(tmp_path):  # this process holds the run directory, as a running training would
        line = one_error_line(run_py(*QUICK, f"hydra.run.dir={tmp_path}", check=False))
    assert f"is in use by another run (pid {os.getpid()})" in line
    assert not (tmp_path / "summary.json").exists()


def test_stale_temporary_files_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    (tmp_path / "checkpoints").mkdir(parents=True)
    stale = [tmp_path / "checkpoints" / ".last.pt.tmp4242", tmp_path / ".summary.json.tmp4242"]
    for path in stale:
        path.write_bytes(os.urandom(1000))
    run_py(*QUICK, f"hydra.run.dir={tmp_path}")
    assert not any(p.exists() for p in stale)
    assert not list(tmp_path.rglob(".*.tmp*"))


# ---------------------------------------------------------------------------- checkpoints: weights_only

def test_checkpoints_load_with_weights_only(tmp_path):
    run_py(*QUICK, f"hydra.run.dir={tmp_path}")
    for name in ("last.pt", "best.pt", "epoch1.pt"):
        state = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


def test_a_malicious_checkpoint_runs_nothing_and_gets_one_line(tmp_path):
    run_py(*QUICK, "trainer.max_updates=10", f"hydra.run.dir={tmp_path}")
    marker = tmp_path / "code_ran"
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["progress"]["evil"] = RunsCode(marker)
    torch.save(state, last)
    line = one_error_line(run_py(*QUICK, f"hydra.run.dir={tmp_path}", check=False))
    assert not marker.exists()
    assert "could run code" in line and "+trust_checkpoint=true" in line
    with pytest.raises(ValueError, match="could run code|Weights only"):  # checkpoint averaging too
        average_checkpoints([last])
    assert not marker.exists()


def test_an_old_format_checkpoint_needs_the_explicit_opt_in(tmp_path):
    run_py(*QUICK, "trainer.max_updates=10", f"hydra.run.dir={tmp_path}")
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # as checkpoints were written before weights_only
    torch.save(state, last)
    assert "+trust_checkpoint=true" in one_error_line(run_py(*QUICK, f"hydra.run.dir={tmp_path}", check=False))
    run_py(*QUICK, "+trust_checkpoint=true", f"hydra.run.dir={tmp_path}")
    assert summary(tmp_path)["updates"] == 20


def test_rng_states_round_trip_through_plain_values():
    np.random.seed(3)
    torch.manual_seed(3)
    state = checkpoint.rng_state()
    expected = (np.random.rand(3), torch.rand(3))
    np.random.seed(4)
    torch.manual_seed(4)
    checkpoint.set_rng_state(state)
    assert np.array_equal(np.random.rand(3), expected[0]) and torch.equal(torch.rand(3), expected[1])


# ------------------------------------------------------------------------------------------------ signals

def _popen(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended first: {proc.stderr.read()[-2000:]}"
        if time.time() > deadline:
            pytest.skip(f"{path.name} did not appear within {timeout} s (machine overloaded)")
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_during_the_final_evaluation_ends_preempted_and_the_resume_reruns_it(tmp_path, sig, code):
    marker = tmp_path / "finalize_started"
    args = [*QUICK, "task.finalize_seconds=60", f"task.finalize_marker={marker}"]
    proc = _popen(tmp_path / "run", *args)
    _wait_for(marker, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == code, proc.stderr.read()[-2000:]
    s = summary(tmp_path / "run")
    assert s["status"] == "preempted" and s["signal"] == signal.Signals(sig).name and s["updates"] == 20
    assert not [e for e in events(tmp_path / "run") if e["split"] == "test"]
    run_py(*args, f"hydra.run.dir={tmp_path / 'run'}")  # the same config: the second final evaluation is quick
    assert summary(tmp_path / "run")["status"] == "completed"
    assert marker.read_text().count("started") == 2  # the final evaluation ran again
    assert len([e for e in events(tmp_path / "run") if e["split"] == "test"]) == 1


# ------------------------------------------------------------------------------------------- divergence

def test_the_default_divergence_bound_is_ten_times_the_uniform_loss(ding_data, tmp_path):
    """Adam at lr 10 (every weight moves by ~10 per update) blows the loss up to thousands of nats: with the
    default trainer.diverge_loss_above=auto that ends the run as diverged, not completed."""
    proc = run_py(*TINY_NMT, "optimizer=adam_vanilla", "optimizer.lr=10", "trainer.max_updates=40",
                  "trainer.log_interval=1", f"hydra.run.dir={tmp_path}", data_root=ding_data)
    s = summary(tmp_path)
    vocab = len(Dictionary.load(ding_data / "ding" / "dict.en.txt"))
    assert s["divergence_bound"] == pytest.approx(10 * math.log(vocab))
    assert s["status"] == "diverged" and s["updates"] < 40, proc.stderr[-2000:]
    loss = float([e for e in events(tmp_path) if e["split"] == "train"][-1]["loss"])
    assert loss > s["divergence_bound"] or not math.isfinite(loss)


def test_divergence_bound_settings():
    class Task:
        def uniform_loss(self):
            return math.log(1000)

    assert divergence_bound("auto", Task()) == pytest.approx(10 * math.log(1000))
    assert divergence_bound("auto", object()) is None  # a task without a uniform prediction: no bound
    assert divergence_bound(3.5, Task()) == 3.5 and divergence_bound(None, Task()) is None


# ------------------------------------------------------------------------------------ one line per bad input

def _ready_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_py(*QUICK, "trainer.max_updates=10", f"hydra.run.dir={run_dir}")
    return run_dir


def _random_last(run_dir: Path) -> None:
    (run_dir / "checkpoints" / "last.pt").write_bytes(os.urandom(4096))


def _short_metrics(run_dir: Path) -> None:
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:1]))


def _corrupt_summary(run_dir: Path) -> None:
    (run_dir / "summary.json").write_text('{"status": "runn')


def _raw_corpus(tmp_path: Path, bad: bytes) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (raw / f"{split}.{lang}").write_text("Ein Satz .\n" if lang == "de" else "A sentence .\n")
    (raw / "train.de").write_bytes(bad)
    return raw


# (case id, extra overrides, what to do to a finished 10-update run first or None, text the error line must hold)
BAD_INPUTS = [
    ("log_interval_0", ["trainer.log_interval=0"], None, "trainer.log_interval=0 is invalid"),
    ("histogram_not_a_list", ["trainer.grad_histogram_updates=5"], None, "trainer.grad_histogram_updates=5"),
    ("seed_not_an_int", ["seed=abc"], None, "seed='abc' is invalid"),
    ("threads_negative", ["trainer.threads=-1"], None, "trainer.threads=-1 is invalid"),
    ("clip_not_a_number", ["trainer.clip_norm=abc"], None, "trainer.clip_norm='abc' is invalid"),
    ("max_updates_0", ["trainer.max_updates=0"], None, "trainer.max_updates=0 is invalid"),
    ("update_freq_0", ["trainer.update_freq=0"], None, "trainer.update_freq=0 is invalid"),
    ("best_mode", ["trainer.best_mode=median"], None, "trainer.best_mode='median' is invalid"),
    ("diverge_bound", ["trainer.diverge_loss_above=abc"], None, "trainer.diverge_loss_above='abc'"),
    ("misspelled_key", ["optimizer.lrr=1"], None, "optimizer.lrr is not a config key (did you mean optimizer.lr?)"),
    ("misspelled_group_key", ["trainer.max_update=5"], None, "did you mean trainer.max_updates?"),
    ("negative_lr", ["optimizer.lr=-1"], None, "lr"),
    ("task_constructor", ["+task.bogus_option=1"], None, "bogus_option"),
    ("random_bytes_checkpoint", [], _random_last, "last.pt is damaged or not a checkpoint"),
    ("shortened_metrics", ["trainer.max_updates=20"], _short_metrics, "metrics.jsonl has 1 events but"),
    ("corrupt_summary_and_a_failure", ["trainer.log_interval=0"], _corrupt_summary, "trainer.log_interval=0"),
]


@pytest.mark.parametrize("case,overrides,damage,expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_every_bad_input_gets_one_line_and_changes_nothing_written(tmp_path, case, overrides, damage, expected):
    run_dir = _ready_run(tmp_path)
    if damage is not None:
        damage(run_dir)
    before = snapshot(run_dir)
    line = one_error_line(run_py(*QUICK, *overrides, f"hydra.run.dir={run_dir}", check=False))
    assert expected in line, line
    after = snapshot(run_dir)
    if case == "corrupt_summary_and_a_failure":  # the damaged summary is kept beside the new one
        assert after.pop("summary.json.damaged") == before.pop("summary.json")
        assert json.loads(after.pop("summary.json"))["status"] == "failed"
    else:
        before.pop("summary.json"), after.pop("summary.json")  # a failure is recorded there: status "failed"
    assert after == before


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    assert "is a file, not a directory" in one_error_line(run_py(*QUICK, f"hydra.run.dir={path}", check=False))
    assert path.read_text() == "not a directory"


def test_a_model_of_another_task_is_one_line(ding_data, tmp_path):
    line = one_error_line(run_py("task=ding", "model=resnet20", "trainer.threads=1", f"hydra.run.dir={tmp_path}",
                                 data_root=ding_data, check=False))
    assert "does not fit task NMTTask" in line and "model=" in line


def test_a_valid_subset_of_zero_is_one_line(ding_data, tmp_path):
    line = one_error_line(run_py(*TINY_NMT, "task.valid_subset=0", f"hydra.run.dir={tmp_path}", data_root=ding_data,
                                 check=False))
    assert "task.valid_subset=0 selects no sentences" in line


@pytest.mark.parametrize("content,expected", [(b"Ein \xe4 Satz .\n", "is not UTF-8 text"),
                                              (b"\x00\x01\x02binary", "is a binary file"), (b"", "is empty")],
                         ids=["latin1", "binary", "empty"])
def test_bad_files_in_a_raw_corpus_are_one_line(tmp_path, content, expected):
    raw = _raw_corpus(tmp_path, content)
    line = one_error_line(run_py(*TINY_NMT, f"task.raw_dir={raw}", f"hydra.run.dir={tmp_path / 'run'}",
                                 data_root=tmp_path / "data", check=False))
    assert expected in line and "train.de" in line


def test_checkpoint_read_errors_are_user_errors(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        checkpoint.read(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError, match="damaged or not a checkpoint|not a checkpoint"):
        checkpoint.read(path)


# ------------------------------------------------------------------------------------------ fault injection

@pytest.mark.slow
def test_sigkill_at_random_points_leaves_records_equal_and_no_leftovers(tmp_path):
    """10 trials: SIGKILL at a random moment (even trials: the moment a checkpoint's temporary file exists, i.e.
    inside a write; trials 3 and 7 are killed twice), then a rerun to the end. Every run's metrics equal the
    uninterrupted run's, its summary says completed and no temporary file is left."""
    import random

    args = [*REGRESSION, "trainer.max_updates=150", "trainer.log_interval=5", "trainer.save_interval_updates=1"]
    run_py(*args, f"hydra.run.dir={tmp_path / 'reference'}")
    reference = events(tmp_path / "reference")
    rng = random.Random(0)
    inside_a_write = 0
    for trial in range(10):
        run_dir = tmp_path / f"trial{trial}"
        for _ in range(2 if trial in (3, 7) else 1):
            proc = _popen(run_dir, *args)
            _wait_for(run_dir / "metrics.jsonl", proc)
            deadline = time.time() + (60 if trial % 2 == 0 else rng.uniform(0.0, 1.0))
            while time.time() < deadline and proc.poll() is None:
                if trial % 2 == 0 and list((run_dir / "checkpoints").glob(".last.pt.tmp*")):
                    inside_a_write += 1
                    break  # a checkpoint is being written right now
                time.sleep(0.0005)
            proc.kill()
            proc.wait()
        run_py(*args, f"hydra.run.dir={run_dir}")
        assert summary(run_dir)["status"] == "completed" and events(run_dir) == reference, f"trial {trial}"
        assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name], f"trial {trial}: leftovers"
    assert inside_a_write >= 3  # of the 5 (or 6, with a second kill) aimed at a checkpoint write
