"""The benchmark scripts run (their numbers are not checked here: timing belongs in benchmarks/, not tests)."""

from __future__ import annotations

import math

import pytest

from benchmarks import train_throughput


@pytest.mark.parametrize("workload", ["nmt-cpu", "cifar-resnet20"])
def test_train_throughput_measures_a_workload_in_each_precision(workload, one_thread):
    for precision in ("fp32", "bf16"):
        r = train_throughput.measure(workload, train_throughput.torch.device("cpu"), precision, compiled=False,
                                     steps=1, warmup=1, max_tokens=400)
        assert r["s_per_update"] > 0 and math.isfinite(r["units_per_s"]) and r["params"] > 0
    assert (r["paper_hours"] is None) == (workload == "nmt-cpu")


def test_train_throughput_lm_workload_builds_the_paper_model_shape():
    w = train_throughput.lm_1bw(train_throughput.torch.device("cpu"), vocab=5000)
    assert w.units == 128 * 20 and w.paper_updates == 14 * 312_000
    loss = w.loss(w.model)
    assert loss.ndim == 0 and math.log(5000) / 2 < loss.item() < 2 * math.log(5000)  # untrained: about uniform


def test_main_job_benchmark_runs_the_composed_config_interleaved(ding_data, monkeypatch, capsys, one_thread):
    """--config default: the cases of the main job (threads 1 and auto) on real batches, with the profile."""
    monkeypatch.setenv("RADAM_DATA", str(ding_data))
    tiny = ["model.encoder_layers=1", "model.decoder_layers=1", "model.embed_dim=32", "model.ffn_dim=64",
            "model.heads=2", "task.max_tokens=256"]
    train_throughput.main(["--config", "default", "--override", *tiny, "--rounds", "2", "--steps", "2",
                           "--warmup", "1", "--profile", "--profile-updates", "2"])
    out = capsys.readouterr().out
    rows = {name: line[len(name):].split() for line in out.splitlines()
            for name in ("threads 1 (default)", "threads auto", "before: 6+6, 6000 updates")
            if line.startswith(name) and "per update" not in line}
    assert len(rows) == 3, out
    # columns: threads, updates/s, IQR, ratio to the default, max_updates, training (min), speed-up vs before
    assert rows["threads 1 (default)"][3] == "1.00x" and rows["before: 6+6, 6000 updates"][-1] == "1.00x", out
    default, before = rows["threads 1 (default)"], rows["before: 6+6, 6000 updates"]
    assert int(before[4]) == 6000 and int(default[4]) < 6000, out
    speedup = float(default[1]) / float(before[1]) * 6000 / int(default[4])  # time of the whole training
    assert float(default[-1][:-1]) == pytest.approx(speedup, rel=0.02), out
    assert f"max_updates {default[4]}" in out
    for phase in ("forward", "backward", "optimizer", "batching"):
        assert any(line.startswith(phase) for line in out.splitlines()), (phase, out)
    assert "aten::" in out
