"""One run on 2 processes (torchrun, gloo, CPU) takes the same steps as 1 process with the same global batch.

1 process with trainer.update_freq=4 accumulates batches (0, 1, 2, 3), ...; 2 processes with update_freq=2
accumulate batches (0, 2) on rank 0 and (1, 3) on rank 1 (the task's interleaved sharding; DDP's no_sync on the
first). The loop divides the summed, all-reduced gradient by the global token count, so both take the same
update up to float rounding.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_NMT, events, run_env, run_py, summary

DDP_RUN = [*TINY_NMT, "model.dropout=0.0", "trainer.max_updates=6", "trainer.log_interval=1",
           "trainer.valid_interval_updates=3", "trainer.grad_histogram_updates=[]", "optimizer=radam"]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(ding_data, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_py(*DDP_RUN, "trainer.update_freq=4", f"hydra.run.dir={single}", data_root=ding_data)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "run.py"), *DDP_RUN, "trainer.update_freq=2", "trainer.device=cpu", f"hydra.run.dir={ddp}"]
    proc = subprocess.run(cmd, cwd=REPO, env=run_env(ding_data), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary(ddp)["world_size"] == 2 and summary(ddp)["status"] == "completed"
    one, two = events(single), events(ddp)
    assert [(e["update"], e["split"]) for e in one] == [(e["update"], e["split"]) for e in two]
    for a, b in zip(one, two):
        if a["split"] == "test":
            continue  # the final beam search compares as text; its losses are checked below
        for key in ("loss", "nll_loss", "gnorm", "lr"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=2e-5), (key, a, b)
    test_one, test_two = one[-1], two[-1]
    assert test_two["test_loss"] == pytest.approx(test_one["test_loss"], rel=2e-5)
    assert len(list(ddp.glob("metrics.jsonl"))) == 1 and (ddp / "checkpoints" / "last.pt").exists()
