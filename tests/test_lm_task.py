"""The language-modelling task end to end: configs, model, carried LSTM state, resume, the lm_1bw sweep and Fig. 4."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from experiments.corpora import files
from experiments.lm import data
from experiments.lm import model as lm_model
from experiments.lm.model import LSTMLanguageModel
from experiments.lm.task import LMTask
from experiments.loop import train
from experiments.task import DataError, UserError
from tests.conftest import DING_FILE, REPO, compose_cfg, events, run_env, run_py, summary
from tests.lm_fixtures import write_archive, write_layout

TINY_LSTM = ["model=lstm_lm", "model.embed_dim=8", "model.hidden_dim=16", "model.cutoffs=[20]",
             "trainer.threads=1", "trainer.progress_bar=false", "trainer.grad_histogram_updates=[]"]
SMALL_BATCHES = ["task.batch_size=8", "task.eval_batch_size=8", "task.bptt=10"]
UPDATES_PER_EPOCH = 45  # tests/lm_fixtures.py corpus at batch 8, bptt 10 (checked by the task at prepare)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("lm_corpus"))


def lm1b_cfg(corpus_dir, *overrides):
    return compose_cfg("task=lm1b", f"task.data_dir={corpus_dir}", *SMALL_BATCHES,
                       f"task.updates_per_epoch={UPDATES_PER_EPOCH}", *TINY_LSTM, *overrides)


# ------------------------------------------------------------------------------------------------- model

def test_adaptive_softmax_nll_and_carried_state_match_one_long_pass():
    torch.manual_seed(0)
    model = LSTMLanguageModel(50, embed_dim=8, hidden_dim=16, num_layers=2, cutoffs=[10, 30, 400]).eval()
    assert model.cutoffs == [10, 30]  # a cut-off beyond the vocabulary is dropped
    tokens = torch.randint(0, 50, (3, 13))
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        whole, _ = model(inp, tgt)
        first, state = model(inp[:, :5], tgt[:, :5])
        rest, _ = model(inp[:, 5:], tgt[:, 5:], state)
        out, _ = model.lstm(model.embed(inp))
        log_prob = model.softmax.log_prob(out.reshape(-1, 16))  # the full distribution over the 50 words
    reference = -log_prob.gather(1, tgt.reshape(-1, 1)).sum()
    assert float(whole) == pytest.approx(float(reference), rel=1e-5)
    assert float(first + rest) == pytest.approx(float(whole), rel=1e-5)


def test_the_nll_is_summed_in_fp32_under_autocast():
    torch.manual_seed(0)
    model = LSTMLanguageModel(50, embed_dim=8, hidden_dim=16, cutoffs=[10]).eval()
    tokens = torch.randint(0, 50, (4, 9))
    with torch.no_grad():
        reference, _ = model(tokens, tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nll, _ = model(tokens, tokens)
    assert nll.dtype == torch.float32 and float(nll) == pytest.approx(float(reference), rel=2e-2)


def test_the_lstm_falls_back_to_fp32_where_the_cpu_has_no_bf16_kernel(monkeypatch):
    """On a CPU without a bf16 LSTM kernel (AVX2 only) the LSTM runs in fp32 inside bf16 autocast: forward and
    backward then equal the fp32 model's up to the bf16 rounding of the softmax input only."""
    monkeypatch.setattr(lm_model, "lstm_autocast_supported", lambda device, dtype: False)
    torch.manual_seed(0)
    model = LSTMLanguageModel(50, embed_dim=8, hidden_dim=16, cutoffs=[10])
    tokens = torch.randint(0, 50, (4, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, (h, c) = model(tokens, tokens)
    nll.backward()
    assert h.dtype == c.dtype == torch.float32  # the LSTM ran in fp32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.lstm.parameters())
    with torch.no_grad():
        reference, _ = model(tokens, tokens)
    assert nll.item() == pytest.approx(reference.item(), rel=2e-2)


def test_bf16_lstm_trains_on_an_avx2_only_cpu(tmp_path):
    """oneDNN limited to AVX2 (as on CPUs without AVX-512) has no bf16 LSTM kernel; the probe sees that and the
    model trains under bf16 autocast instead of raising "could not create a primitive descriptor"."""
    code = ("import torch; from experiments.lm.model import LSTMLanguageModel, lstm_autocast_supported\n"
            "m = LSTMLanguageModel(50, embed_dim=8, hidden_dim=16, cutoffs=[10]); t = torch.randint(0, 50, (2, 5))\n"
            "with torch.autocast('cpu', dtype=torch.bfloat16): nll, _ = m(t, t)\n"
            "nll.backward(); print(lstm_autocast_supported('cpu', torch.bfloat16), float(nll) > 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**run_env(), "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]


def test_every_lm_config_composes():
    for task, model, optimizer in [("lm1b", "lstm_lm", "radam"), ("lm1b", "lstm_lm", "adam_vanilla"),
                                   ("ding_lm", "lstm_lm_cpu", "radam"), ("ding_lm", "lstm_lm_cpu", "adam_vanilla")]:
        cfg = compose_cfg(f"task={task}", f"model={model}", f"optimizer={optimizer}")
        assert cfg.optimizer.scheduler._target_ == "radam.schedules.MultiStep"
        assert set(cfg.optimizer.scheduler) == {"_target_", "_partial_", "milestones", "gamma", "updates_per_epoch"}
        assert cfg.trainer.max_epochs == 14 and cfg.trainer.clip_norm == 5.0 and cfg.optimizer.lr == 1e-3
        assert cfg.trainer.max_updates >= 14 * cfg.task.updates_per_epoch  # a bound: the epochs end the run
    cfg = compose_cfg("experiment=lm_1bw", "optimizer=radam")
    assert (cfg.task.batch_size, cfg.task.bptt, cfg.task.unk_max_count) == (128, 20, 3)
    assert (cfg.model.hidden_dim, cfg.model.embed_dim, list(cfg.model.cutoffs)) == (2048, 300, [4000, 40000, 200000])


# ----------------------------------------------------------------------------------------- task and loop

def test_wrong_updates_per_epoch_is_a_user_error_naming_the_value(corpus_dir, tmp_path):
    task = LMTask(data_dir=str(corpus_dir), batch_size=8, eval_batch_size=8, bptt=10, updates_per_epoch=7)
    with pytest.raises(UserError, match=f"set task.updates_per_epoch={UPDATES_PER_EPOCH}$"):
        task.prepare()
    task = LMTask(data_dir=str(corpus_dir), batch_size=8, bptt=10, update_freq=2,
                  updates_per_epoch=math.ceil(UPDATES_PER_EPOCH / 2))
    task.prepare()
    assert len(list(task.train_batches(1))) == UPDATES_PER_EPOCH


def test_lm1b_archive_from_a_url_is_checked_extracted_and_its_checksum_recorded(tmp_path):
    archive = write_archive(tmp_path / "mirror" / data.ARCHIVE_NAME)
    digest = files.file_sha256(archive)
    options = dict(data_root=str(tmp_path / "data"), url=archive.as_uri(), batch_size=8, bptt=10)
    with pytest.raises(DataError, match=f"has sha256 {digest} but task.sha256=f+ \\(moved aside"):
        LMTask(sha256="f" * 64, **options).prepare()
    rejected = tmp_path / "data" / "lm1b" / "raw" / f"{data.ARCHIVE_NAME}.rejected-{digest[:12]}"
    assert rejected.exists()  # never used again: the next prepare downloads anew
    task = LMTask(sha256=digest, updates_per_epoch=UPDATES_PER_EPOCH, **options)
    task.prepare()  # the download is kept in <data_dir>/raw, the layout extracted next to it
    lm1b = tmp_path / "data" / "lm1b"
    assert (lm1b / "raw" / data.ARCHIVE_NAME).exists() and (lm1b / data.ARCHIVE_TOP / data.TRAIN_DIR).is_dir()
    assert json.loads((lm1b / "manifest.json").read_text())["archive"]["stats"]["sha256"] == digest
    assert len(list(task.train_batches(1))) == UPDATES_PER_EPOCH  # the same corpus as the plain folder


def test_lm1b_on_real_layout_files_trains_and_reports_ppl(corpus_dir, tmp_path):
    result = train(lm1b_cfg(corpus_dir, "optimizer=radam", "trainer.max_epochs=2", "trainer.log_interval=10"),
                   tmp_path)
    assert result["status"] == "completed" and result["updates"] == 2 * UPDATES_PER_EPOCH
    ev = events(tmp_path)
    train_ev = [e for e in ev if e["split"] == "train"]
    assert [e["update"] for e in train_ev] == list(range(10, 2 * UPDATES_PER_EPOCH, 10)) + [2 * UPDATES_PER_EPOCH]
    assert all(e["ppl"] == pytest.approx(math.exp(e["loss"])) for e in train_ev)
    assert train_ev[-1]["ppl"] < train_ev[0]["ppl"] < 100  # learns; the vocabulary has ~64 words
    valid = [e for e in ev if e["split"] == "valid"]
    assert [e["epoch"] for e in valid] == [1, 2]
    assert all({"loss", "ppl", "test_loss", "test_ppl"} <= set(e) for e in valid)
    test = ev[-1]
    assert test["split"] == "test" and set(test) >= {"test_loss", "test_ppl"}
    assert test["test_ppl"] == pytest.approx(valid[-1]["test_ppl"])  # the final model, scored the same way


def test_resume_continues_the_carried_lstm_state_exactly(corpus_dir, tmp_path):
    common = ["optimizer=adam_vanilla", "trainer.log_interval=1", "trainer.valid_interval_updates=9",
              "trainer.max_epochs=null"]
    train(lm1b_cfg(corpus_dir, *common, "trainer.max_updates=18"), tmp_path / "once")
    train(lm1b_cfg(corpus_dir, *common, "trainer.max_updates=9"), tmp_path / "twice")  # stops mid-epoch
    ckpt = torch.load(tmp_path / "twice" / "checkpoints" / "last.pt", weights_only=True)
    hidden = ckpt["progress"]["task"]["hidden"]
    assert hidden[0].shape == (2, 8, 16) and hidden[0].abs().sum() > 0  # (layers, batch rows, hidden)
    train(lm1b_cfg(corpus_dir, *common, "trainer.max_updates=18"), tmp_path / "twice")  # resumes at update 9
    assert events(tmp_path / "twice") == events(tmp_path / "once")


@pytest.mark.skipif(not DING_FILE.exists(), reason=f"{DING_FILE} is missing (Debian package trans-de-en)")
def test_offline_default_ding_lm_runs(tmp_path):
    cfg = compose_cfg("task=ding_lm", "model=lstm_lm_cpu", f"task.data_root={tmp_path / 'data'}",
                      "trainer.max_epochs=null", "trainer.max_updates=3", "trainer.progress_bar=false",
                      "trainer.grad_histogram_updates=[]")
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    manifest = json.loads((tmp_path / "data" / "ding_lm" / "prepared" / "manifest.json").read_text())
    assert manifest["encode"]["stats"]["train_tokens"] == 189494  # the 2023-01-30 Ding file
    assert events(tmp_path / "run")[-1]["test_ppl"] < 3973  # better than uniform over the vocabulary


def test_non_lm_model_is_a_user_error(corpus_dir, tmp_path):
    cfg = compose_cfg("task=lm1b", f"task.data_dir={corpus_dir}", *SMALL_BATCHES,
                      f"task.updates_per_epoch={UPDATES_PER_EPOCH}", "model=transformer_cpu")
    with pytest.raises(UserError, match="use model=lstm_lm"):
        train(cfg, tmp_path)


# ------------------------------------------------------------------------------------- the sweep and Fig. 4

def test_lm_1bw_sweep_on_real_layout_files_draws_fig4(corpus_dir, tmp_path):
    sweep = tmp_path / "sweep"
    run_py("-m", "experiment=lm_1bw", f"task.data_dir={corpus_dir}", *SMALL_BATCHES,
           f"task.updates_per_epoch={UPDATES_PER_EPOCH}", *TINY_LSTM, "trainer.device=cpu", "trainer.precision=fp32",
           "trainer.max_epochs=2", "trainer.log_interval=20", f"hydra.sweep.dir={sweep}", timeout=240)
    runs = {summary(d)["optimizer"]: d for d in sweep.iterdir() if (d / "summary.json").exists()}
    assert set(runs) == {"adam_vanilla", "radam"} and all(summary(d)["status"] == "completed" for d in runs.values())
    assert (sweep / "fig4_lm.png").stat().st_size > 0 and (sweep / "fig4_lm.pdf").stat().st_size > 0
    rows = list(csv.DictReader(open(sweep / "fig4_lm.csv")))
    for name, run_dir in runs.items():
        ev = events(run_dir)
        mine = [r for r in rows if r["optimizer"] == name]
        expect_train = [(e["update"], e["ppl"]) for e in ev if e["split"] == "train"]
        expect_test = [(e["epoch"], e["test_ppl"]) for e in ev if e["split"] == "valid"]
        assert [(int(r["update"]), float(r["ppl"])) for r in mine if r["split"] == "train"] == expect_train
        assert [(int(r["epoch"]), float(r["ppl"])) for r in mine if r["split"] == "test"] == expect_test
    summary_rows = list(csv.DictReader(open(sweep / "fig4_lm_summary.csv")))
    assert [r["optimizer"] for r in summary_rows] == ["adam_vanilla", "radam"]
    assert float(summary_rows[1]["test_ppl"]) == events(runs["radam"])[-1]["test_ppl"]


# ------------------------------------------------------------------------------------------------- DDP

@pytest.mark.slow
def test_two_gloo_processes_take_row_blocks_and_resume_their_carried_state(corpus_dir, tmp_path):
    """2 processes x 4 rows == 1 process x 8 rows, also across a resume (the state is gathered into last.pt)."""
    common = [f"task.data_dir={corpus_dir}", *SMALL_BATCHES, f"task.updates_per_epoch={UPDATES_PER_EPOCH}",
              *TINY_LSTM, "model.dropout=0.0", "optimizer=radam", "trainer.log_interval=1",
              "trainer.valid_interval_updates=9", "trainer.max_epochs=null", "trainer.device=cpu", "task=lm1b"]
    run_py(*common, "trainer.max_updates=18", f"hydra.run.dir={tmp_path / 'one'}")
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(REPO / "run.py")]
    for updates in (9, 18):  # the second call resumes at update 9
        proc = subprocess.run([sys.executable, *torchrun, *common, f"trainer.max_updates={updates}",
                               f"hydra.run.dir={tmp_path / 'two'}"], cwd=REPO, env=run_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary(tmp_path / "two")["world_size"] == 2
    one, two = events(tmp_path / "one"), events(tmp_path / "two")
    assert [(e["update"], e["split"]) for e in one] == [(e["update"], e["split"]) for e in two]
    for a, b in zip(one, two):
        for key in ("loss", "gnorm", "test_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4), (key, a, b)
