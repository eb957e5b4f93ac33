"""The training loop's mechanics: determinism, accumulation, clipping, divergence, records, resume, signals."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import records
from experiments.distributed import Dist
from experiments.histograms import grad_histogram
from experiments.loop import train, train_step
from experiments.task import UserError
from tests.conftest import REGRESSION, REPO, TINY_NMT, compose_cfg, events, run_env, run_py, summary
from tests.regression_task import RegressionTask


def regression_run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_cfg(*REGRESSION, "trainer.log_interval=2", "trainer.save_interval_updates=5", *overrides)
    return train(cfg, run_dir)


# ------------------------------------------------------------------------------------------ determinism

def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    regression_run(tmp_path / "a", "trainer.max_updates=20")
    regression_run(tmp_path / "b", "trainer.max_updates=20")
    regression_run(tmp_path / "c", "trainer.max_updates=20", "seed=2")
    assert events(tmp_path / "a") == events(tmp_path / "b")
    assert events(tmp_path / "a") != events(tmp_path / "c")
    assert summary(tmp_path / "a")["status"] == "completed"


def test_accumulation_two_half_batches_equal_one_full_batch(tmp_path):
    # batch_size 8 x update_freq 2 sees exactly the examples of batch_size 16 (same permutation, split finer)
    common = ["trainer.max_updates=12", "model.dropout=0.0", "optimizer=adam_vanilla"]
    regression_run(tmp_path / "full", *common, "task.batch_size=16")
    regression_run(tmp_path / "accum", *common, "task.batch_size=8", "trainer.update_freq=2")
    full, accum = events(tmp_path / "full"), events(tmp_path / "accum")
    assert [e["update"] for e in full] == [e["update"] for e in accum]
    for a, b in zip(full, accum):
        for key in ("loss", "gnorm", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (key, a, b)


def test_clip_norm_bounds_the_step_and_logs_the_unclipped_norm():
    task = RegressionTask(seed=1)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model({"hidden": 16, "dropout": 0.0})
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # step = -g: its norm is the clipped gradient's norm
    cfg = compose_cfg(*REGRESSION, "trainer.clip_norm=0.05").trainer
    batch = next(iter(task.train_batches(1)))
    stats, gnorm, lr, _ = train_step(task, model, model, [batch], opt, None, None, cfg, torch.device("cpu"),
                                     Dist(), histogram=False)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert gnorm > 0.05 and stats["sample_size"] == 16 and lr == 1.0
    assert float(step) == pytest.approx(0.05, rel=1e-4)


# ------------------------------------------------------------------------------------------ divergence

def test_loss_above_bound_stops_with_status_diverged(tmp_path):
    result = regression_run(tmp_path, "trainer.max_updates=50", "trainer.diverge_loss_above=0.5")
    assert result["status"] == "diverged" and result["updates"] == 1
    assert summary(tmp_path)["status"] == "diverged"
    last = events(tmp_path)[-1]
    assert last["update"] == 1 and last["split"] == "train" and last["loss"] > 0.5


def test_non_finite_loss_stops_with_status_diverged(tmp_path):
    result = regression_run(tmp_path, "trainer.max_updates=50", "optimizer=sgd", "optimizer.lr=1e30",
                            "optimizer.momentum=0.0")
    assert result["status"] == "diverged" and 1 < result["updates"] < 50
    assert not math.isfinite(float(events(tmp_path)[-1]["loss"]))  # written as "inf"/"nan" strings


# ------------------------------------------------------------------------------------------ records

def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    path = tmp_path / "summary.json"
    records.write_json(path, {"status": "running"})

    def crash(tmp):
        tmp.write_text('{"status": "compl')  # half written, then the process "dies"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left behind


def test_jsonl_partial_last_line_is_ignored_and_truncated_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = records.JsonlWriter(path)
    for u in (1, 2, 3):
        w.write({"update": u, "loss": float("nan") if u == 3 else 1.0 / u})
    with open(path, "ab") as f:
        f.write(b'{"update": 4, "lo')  # a kill in the middle of a write
    assert [e["update"] for e in records.read_jsonl(path)] == [1, 2, 3]
    assert records.read_jsonl(path)[2]["loss"] == "nan"
    resumed = records.JsonlWriter(path, keep_lines=2)
    resumed.write({"update": 3, "loss": 0.3})
    assert [e["update"] for e in records.read_jsonl(path)] == [1, 2, 3]
    assert path.read_bytes().endswith(b"\n") and resumed.lines == 3


def test_run_directory_layout_and_summary(tmp_path):
    result = regression_run(tmp_path, "trainer.max_updates=40", "optimizer=adam_warmup",
                            "optimizer.scheduler.warmup_updates=10")
    assert (tmp_path / "config_resolved.yaml").exists()
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"last.pt", "best.pt", "epoch1.pt", "epoch2.pt"}
    s = summary(tmp_path)
    assert s == result
    assert s["status"] == "completed" and s["updates"] == 40 and s["optimizer"] == "adam_warmup"
    assert s["seed"] == 1 and s["versions"]["torch"] == torch.__version__ and len(s["git"]["sha"] or "x" * 40) == 40
    assert s["final"]["valid"]["loss"] >= s["best"]["value"]
    assert s["final"]["test"]["averaged_checkpoints"] == 2
    ev = events(tmp_path)
    assert {e["split"] for e in ev} == {"train", "valid", "test"}
    assert all({"update", "epoch", "split"} <= e.keys() for e in ev)
    assert [e["update"] for e in ev if e["split"] == "train"] == list(range(2, 41, 2))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["progress"]["update"] == 40 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng"}


def test_grad_histograms_written_at_the_listed_updates(tmp_path):
    regression_run(tmp_path, "trainer.max_updates=12", "trainer.grad_histogram_updates=[1,5,10,25]")
    hists = records.read_jsonl(tmp_path / "grad_histograms.jsonl")
    assert [h["update"] for h in hists] == [1, 5, 10]
    n_params = 8 * 16 + 16 + 16 + 1
    for h in hists:
        assert h["bins"] == 100 and len(h["counts"]) == 100 and h["edges_log10"] == [-12.0, 2.0]
        assert sum(h["counts"]) + h["zeros"] + h["underflow"] + h["overflow"] == h["total"] == n_params
    assert hists[0]["counts"] != hists[1]["counts"]


def test_grad_histogram_bins():
    g = torch.tensor([0.0, 0.0, 1e-13, 1e-12, 0.5, -0.5, 1e-3, 99.0, 100.0, float("inf")], dtype=torch.float64)
    h = grad_histogram([g[:5], g[5:]], lo=-12, hi=2, bins=14)  # one bin per decade
    assert (h["zeros"], h["underflow"], h["overflow"], h["total"]) == (2, 1, 2, 10)
    assert h["counts"][0] == 1  # 1e-12 opens the first bin
    assert h["counts"][11] == 2  # 0.5 and |-0.5| lie in [1e-1, 1)
    assert h["counts"][9] == 1 and h["counts"][13] == 1  # 1e-3 and 99


# ------------------------------------------------------------------------------------------ resume

def test_extending_max_updates_continues_a_finished_run(tmp_path):
    regression_run(tmp_path / "r", "trainer.max_updates=20")
    first = events(tmp_path / "r")
    result = regression_run(tmp_path / "r", "trainer.max_updates=30")
    assert result["status"] == "completed" and result["updates"] == 30
    ev = events(tmp_path / "r")
    upto20 = [e for e in first if e["split"] != "test"]
    assert ev[:len(upto20)] == upto20  # history kept; the old final test event replaced
    assert [e["update"] for e in ev if e["split"] == "test"] == [30]
    assert [e["update"] for e in ev if e["split"] == "train"] == list(range(2, 31, 2))
    # the schedule took the new horizon: with the old one the lr would have stayed at min_lr = 0 after update 20
    assert all(e["lr"] > 0 for e in ev if e["split"] == "train" and e["update"] > 20)


def test_max_epochs_stops_at_an_epoch_end(tmp_path):
    result = regression_run(tmp_path, "trainer.max_updates=null", "trainer.max_epochs=2", "optimizer.scheduler=null")
    assert result["updates"] == 2 * 256 // 16 and result["status"] == "completed"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch*.pt")) == ["epoch1.pt", "epoch2.pt"]
    assert [e["update"] for e in events(tmp_path) if e["split"] == "valid"] == [16, 32]


def test_resuming_with_an_incompatible_model_is_a_user_error(tmp_path):
    regression_run(tmp_path, "trainer.max_updates=5")
    with pytest.raises(UserError, match=r"holds a run of another configuration \(model.hidden: 16 -> 32\)"):
        regression_run(tmp_path, "trainer.max_updates=10", "model.hidden=32")
    with pytest.raises(UserError, match="cannot resume from .*last.pt"):  # forced: the weights do not fit
        regression_run(tmp_path, "trainer.max_updates=10", "model.hidden=32", "+resume=force")
    assert summary(tmp_path)["updates"] == 5


def test_rerunning_a_finished_run_changes_nothing_but_the_final_event(tmp_path):
    regression_run(tmp_path, "trainer.max_updates=10")
    before = events(tmp_path)
    regression_run(tmp_path, "trainer.max_updates=10")
    assert events(tmp_path) == before


def _start(run_dir: Path, data_root: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "run.py"), *TINY_NMT, f"hydra.run.dir={run_dir}", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=run_env(data_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_update(run_dir: Path, update: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until metrics.jsonl shows ``update`` and a checkpoint exists."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before update {update}: {proc.stderr.read()}"
        ev = records.read_jsonl(run_dir / "metrics.jsonl")
        if ev and ev[-1]["update"] >= update and (run_dir / "checkpoints" / "last.pt").exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"no update {update} after {timeout} s")


NMT_RESUME = ["trainer.max_updates=30", "trainer.log_interval=3", "trainer.save_interval_updates=4",
              "trainer.valid_interval_updates=10", "optimizer=radam"]


@pytest.fixture(scope="module")
def uninterrupted(ding_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_py(*TINY_NMT, *NMT_RESUME, f"hydra.run.dir={run_dir}", data_root=ding_data)
    return run_dir


def test_resume_after_sigkill_equals_uninterrupted_run(ding_data, uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    proc = _start(run_dir, ding_data, *NMT_RESUME)
    _wait_for_update(run_dir, 9, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert summary(run_dir)["status"] == "running"
    run_py(*TINY_NMT, *NMT_RESUME, f"hydra.run.dir={run_dir}", data_root=ding_data)
    s = summary(run_dir)
    assert s["status"] == "completed" and s["updates"] == 30
    resumed, reference = events(run_dir), events(uninterrupted)
    for e in resumed + reference:  # the test event's sacreBLEU signature is text; everything else compares
        e.pop("sacrebleu_signature", None)
    assert resumed == reference


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_stop_signal_writes_a_checkpoint_and_exits_cleanly_then_resumes(ding_data, uninterrupted, tmp_path, sig,
                                                                          code):
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) both end the run after the current update, resumable; SIGINT
    exits 130 (the shell's convention, which also stops a sweep), SIGTERM 0."""
    run_dir = tmp_path / "term"
    proc = _start(run_dir, ding_data, *NMT_RESUME)
    _wait_for_update(run_dir, 6, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    s = summary(run_dir)
    assert s["status"] == "preempted" and 6 <= s["updates"] < 30 and s["signal"] == signal.Signals(sig).name
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["progress"]["update"] == s["updates"]  # saved at the update it stopped after
    run_py(*TINY_NMT, *NMT_RESUME, f"hydra.run.dir={run_dir}", data_root=ding_data)
    assert summary(run_dir)["status"] == "completed"
    train_events = lambda d: [e for e in events(d) if e["split"] != "test"]  # noqa: E731
    assert train_events(run_dir) == train_events(uninterrupted)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_a_basic_launcher_sweep_after_its_current_run(ding_data, tmp_path, sig, code):
    """`kill <pid>` (or Ctrl-C) of `run.py -m` with the basic launcher, whose runs follow one another in one
    process: the current run checkpoints and ends preempted, and the sweep stops there (the next run is never
    started), with one line saying how to resume; rerunning the command resumes the first run."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "run.py"), "-m", *TINY_NMT, *NMT_RESUME, "seed=1,2",
           f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=seed${seed}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env(ding_data), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_update(sweep / "seed1", 6, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    s = summary(sweep / "seed1")
    assert s["status"] == "preempted" and s["signal"] == signal.Signals(sig).name and s["updates"] < 30
    assert not (sweep / "seed2").exists()
    if sig == signal.SIGTERM:
        assert "rerun the same command to resume" in proc.stderr.read().strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ user errors

def test_missing_data_is_one_line_exit_1_and_nothing_lost(ding_data, tmp_path):
    run_dir = tmp_path / "run"
    run_py(*TINY_NMT, "trainer.max_updates=4", "trainer.save_interval_updates=2", f"hydra.run.dir={run_dir}",
           data_root=ding_data)
    before = (run_dir / "metrics.jsonl").read_bytes()
    proc = run_py(*TINY_NMT, "trainer.max_updates=8", f"hydra.run.dir={run_dir}",
                  f"task.data_dir={tmp_path / 'nowhere'}", "task.ding_file=/nonexistent/de-en", "task.urls=[]",
                  data_root=ding_data, check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert summary(run_dir)["status"] == "failed" and summary(run_dir)["error"] in lines[0]
    assert (run_dir / "metrics.jsonl").read_bytes() == before
    assert (run_dir / "checkpoints" / "last.pt").exists()


def test_impossible_config_is_one_line_exit_1(tmp_path):
    proc = run_py(*TINY_NMT, "trainer.precision=fp8", "trainer.device=cpu", f"hydra.run.dir={tmp_path}",
                  data_root=tmp_path / "no_data_needed", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: trainer.precision='fp8' is invalid: use fp32, bf16 or fp16"
    assert summary(tmp_path)["status"] == "failed"


# ------------------------------------------------------------------------------------------ AMP, compile

def amp_train_and_resume(data_root: Path, run_dir: Path, *overrides: str) -> list[float]:
    """20 updates, then a resume extended to 40; returns the 8 logged training losses."""
    args = [*TINY_NMT, *overrides, "trainer.log_interval=5", "trainer.save_interval_updates=10",
            f"hydra.run.dir={run_dir}"]
    run_py(*args, "trainer.max_updates=20", data_root=data_root)
    run_py(*args, "trainer.max_updates=40", data_root=data_root)  # resume (GradScaler state for fp16) and extend
    s = summary(run_dir)
    assert s["status"] == "completed" and s["updates"] == 40
    losses = [e["loss"] for e in events(run_dir) if e["split"] == "train"]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    return losses


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_autocast_trains_and_resumes(ding_data, tmp_path, precision):
    amp_train_and_resume(ding_data, tmp_path, "trainer.device=cpu", f"trainer.precision={precision}")
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    assert (scaler is not None and "scale" in scaler) == (precision == "fp16")  # GradScaler state in checkpoints


@pytest.mark.slow  # 76 s in CI (inductor compiles a few shapes), the slowest default test: `make test-all` runs it
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on CPU needs a C++ compiler")
def test_cpu_compile_trains_and_resumes(ding_data, tmp_path):
    amp_train_and_resume(ding_data, tmp_path, "trainer.device=cpu", "trainer.compile=true")


# ------------------------------------------------------------------------------------------ CUDA

@pytest.mark.gpu
@pytest.mark.parametrize("precision,compile", [("bf16", False), ("fp16", False), ("bf16", True)])
def test_cuda_amp_and_compile_train_and_resume(ding_data, tmp_path, precision, compile):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    amp_train_and_resume(ding_data, tmp_path, "trainer=gpu", f"trainer.precision={precision}",
                         f"trainer.compile={str(compile).lower()}")
    assert summary(tmp_path)["device"].startswith("cuda")
