"""The fairseq plugin (integrations/fairseq_radam) against a real fairseq: fairseq-train runs and equivalence.

Runs only where fairseq imports (it is not a dependency: docs/fairseq.md builds it in its own venv); skipped
otherwise, e.g. in CI. With the venv of docs/fairseq.md (pytest, sacremoses and subword-nmt added):

    /tmp/fsvenv/bin/python -m pytest tests/test_fairseq_plugin.py -v        # ~1 min on one CPU

The corpus: 300 train / 60 valid pairs of the Ding dictionary (/usr/share/trans/de-en) through the project's own
parsing, Moses tokenization and lower-casing, binarized by fairseq-preprocess (word level, no BPE).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:  # fairseq 0.12.2 fails on Python >= 3.11 with errors other than ImportError
    import fairseq  # noqa: F401
    from fairseq import optim as fairseq_optim
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim.lr_scheduler import build_lr_scheduler
except Exception as e:  # noqa: BLE001
    pytest.skip(f"fairseq does not import here ({type(e).__name__}: {str(e)[:80]}); it is optional: "
                "see docs/fairseq.md to run this test", allow_module_level=True)

import radam
from radam.schedules import LinearWarmupLinearDecay

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # fairseq's hydra 1.0 style

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "integrations" / "fairseq_radam"
DING_FILE = Path("/usr/share/trans/de-en")
TINY_MODEL = ["-a", "transformer_iwslt_de_en", "--encoder-layers", "1", "--decoder-layers", "1",
              "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
              "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
# The paper's IWSLT flags (docs/fairseq.md), at a few updates on CPU.
PAPER_FLAGS = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.3",
               "--clip-norm", "25", "--weight-decay", "1e-4", "--adam-betas", "(0.9, 0.999)",
               "--lr-scheduler", "polynomial_decay", "--end-learning-rate", "1e-9"]
TRAIN_LINE = re.compile(r"train_inner \| .* loss=([^,]+), .*num_updates=(\d+), lr=([^,]+),")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory) -> Path:
    """A tiny binarized De-En corpus from the Ding dictionary."""
    if not DING_FILE.exists():
        pytest.skip(f"{DING_FILE} is missing (Debian package trans-de-en)")
    from experiments.nmt.data import lowercase, moses_tokenize
    from experiments.nmt.ding import parse_ding

    root = tmp_path_factory.mktemp("fairseq_ding")
    pairs = parse_ding(DING_FILE.read_text(encoding="utf-8").splitlines())[:360]
    for split, part in (("train", pairs[:300]), ("valid", pairs[300:])):
        for side, lang in enumerate(("de", "en")):
            lines = lowercase(moses_tokenize([pair[side] for pair in part], lang))
            (root / f"{split}.{lang}").write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en",
                    "--trainpref", str(root / "train"), "--validpref", str(root / "valid"),
                    "--destdir", str(root / "bin"), "--workers", "1"],
                   check=True, capture_output=True, env=env(), cwd=root)
    return root / "bin"


def fairseq_train(data: Path, save_dir: Path, *flags: str, updates: int = 8) -> list[tuple[int, float, float]]:
    """Run fairseq-train with the plugin; return its (update, loss, lr) log lines; raise with its output."""
    command = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", str(PLUGIN), *TINY_MODEL,
               *PAPER_FLAGS, "--max-tokens", "500", "--max-update", str(updates), "--total-num-update",
               str(updates), "--cpu", "--seed", "1", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
               "--log-format", "simple", "--log-interval", "1", "--num-workers", "0", *flags]
    done = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=REPO, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"fairseq-train exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = [(int(u), float(loss), float(lr)) for loss, u, lr in TRAIN_LINE.findall(done.stdout + done.stderr)]
    assert [u for u, _, _ in lines] == list(range(1, updates + 1)), done.stderr[-2000:]
    return lines


def checkpoint(save_dir: Path) -> dict:
    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)


def models_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return all(torch.allclose(a["model"][k], b["model"][k], rtol=0, atol=atol) for k in a["model"])


# ------------------------------------------------------------------------------------------- fairseq-train
def test_fairseq_train_with_radam(data_bin, tmp_path):
    lines = fairseq_train(data_bin, tmp_path / "radam", "--optimizer", "radam", "--lr", "3e-4", "--threshold", "5")
    assert all(loss == loss and 0 < loss < 20 for _, loss, _ in lines)
    # polynomial_decay without warmup, as radam.schedules.LinearWarmupLinearDecay: the log shows the lr set
    # after update u, i.e. lr(u) = 3e-4 + (1e-9 - 3e-4) u / 8 (the last one is end-learning-rate).
    for u, _, lr in lines:
        assert lr == pytest.approx(3e-4 + (1e-9 - 3e-4) * u / 8, rel=1e-4)
    ckpt = checkpoint(tmp_path / "radam")
    assert ckpt["optimizer_history"][-1]["optimizer_name"] == "FairseqRAdam"
    state = ckpt["last_optimizer_state"]
    assert state["param_groups"][0]["threshold"] == 5.0 and state["param_groups"][0]["degenerated_to_sgd"] is True
    assert all(int(s["step"]) == 8 for s in state["state"].values())
    # the file fairseq-train wrote loads safely (weights_only=True) into the harness's model, weight for weight
    from experiments.nmt.fairseq_compat import from_fairseq_state_dict, load_fairseq_checkpoint

    model = load_fairseq_checkpoint(tmp_path / "radam" / "checkpoint_last.pt")
    theirs = from_fairseq_state_dict(ckpt["model"])
    assert len(model.encoder_layers) == 1 and all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_fairseq_train_adam_2k_freezes_then_matches_fairseq_adam(data_bin, tmp_path):
    # Adam-2k with 4 frozen updates out of 4: the model is the initial one whatever the lr, m stays 0, v moves.
    frozen = [checkpoint(tmp_path / name) for name, lr in (("f1", "3e-4"), ("f2", "0.1"))
              if fairseq_train(data_bin, tmp_path / name, "--optimizer", "adam_2k", "--freeze-steps", "4",
                               "--lr", lr, updates=4)]
    assert models_equal(*frozen)
    states = frozen[0]["last_optimizer_state"]["state"].values()
    assert all(not s["exp_avg"].any() and s["exp_avg_sq"].any() for s in states)
    # --freeze-steps 0 is fairseq's own Adam (the arithmetic radam.Adam reproduces): same run, same model.
    ours = fairseq_train(data_bin, tmp_path / "ours", "--optimizer", "adam_2k", "--freeze-steps", "0", "--lr", "3e-4",
                         updates=4)
    theirs = fairseq_train(data_bin, tmp_path / "theirs", "--optimizer", "adam", "--lr", "3e-4", updates=4)
    assert [loss for _, loss, _ in ours] == pytest.approx([loss for _, loss, _ in theirs], abs=2e-3)
    # float32 rounding differs (fused kernel vs fairseq's loop); it shows most on the k_proj biases, whose
    # gradient is rounding noise that Adam scales up to lr-sized steps: 3e-6 here after 4 updates of <= 3e-4.
    a, b = checkpoint(tmp_path / "ours"), checkpoint(tmp_path / "theirs")
    assert models_equal(a, b, atol=1e-5)
    assert not models_equal(a, frozen[0], atol=1e-4)  # the unfrozen run moved (by up to 4 lr)


# ------------------------------------------------------------------------------- same gradients, in-process
def fairseq_built(data_bin: Path, *flags: str, params):
    """The optimizer and lr scheduler exactly as fairseq-train builds them from these flags."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data_bin), "--user-dir", str(PLUGIN), *TINY_MODEL,
                                                *PAPER_FLAGS, "--max-update", "40", "--total-num-update", "40",
                                                "--cpu", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    optimizer = fairseq_optim.build_optimizer(cfg.optimizer, params)
    return optimizer, build_lr_scheduler(cfg.lr_scheduler, optimizer)


def same_gradients(fs_optimizer, fs_scheduler, ours, our_scheduler, fs_params, our_params, updates=40):
    """Step both with identical gradients and fairseq's update/scheduler order; the iterates must be equal."""
    generator = torch.Generator().manual_seed(0)
    fs_scheduler.step_update(0)  # as fairseq's Trainer after building the optimizer
    for u in range(1, updates + 1):
        assert fs_optimizer.get_lr() == pytest.approx(ours.param_groups[0]["lr"], rel=1e-12, abs=1e-20), u
        for p, q in zip(fs_params, our_params):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        fs_optimizer.step()
        ours.step()
        fs_scheduler.step_update(u)
        our_scheduler.step()
        for p, q in zip(fs_params, our_params):
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=f"update {u}")


def params_pair():
    torch.manual_seed(0)
    first = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    return first, [torch.nn.Parameter(p.detach().clone()) for p in first]


@pytest.mark.parametrize("threshold, sgd", [("5", "true"), ("4", "false")])
def test_radam_wrapper_steps_as_radam(data_bin, threshold, sgd):
    fs_params, our_params = params_pair()
    fs_opt, fs_sched = fairseq_built(data_bin, "--optimizer", "radam", "--lr", "3e-3", "--threshold", threshold,
                                     "--degenerated-to-sgd", sgd, "--warmup-updates", "10", params=fs_params)
    ours = radam.RAdam(our_params, lr=3e-3, betas=(0.9, 0.999), weight_decay=1e-4, threshold=float(threshold),
                       degenerated_to_sgd=sgd == "true")
    # fairseq's polynomial_decay warms up from 0: LinearWarmupLinearDecay with warmup_init_lr 0.
    schedule = LinearWarmupLinearDecay(ours, max_updates=40, warmup_updates=10, warmup_init_lr=0.0, min_lr=1e-9)
    assert isinstance(fs_opt.optimizer, radam.RAdam)
    same_gradients(fs_opt, fs_sched, ours, schedule, fs_params, our_params)


def test_adam_2k_wrapper_steps_as_radam_adam(data_bin):
    fs_params, our_params = params_pair()
    fs_opt, fs_sched = fairseq_built(data_bin, "--optimizer", "adam_2k", "--lr", "3.086e-3", "--freeze-steps", "6",
                                     "--adam-eps", "1e-4", params=fs_params)
    ours = radam.Adam(our_params, lr=3.086e-3, betas=(0.9, 0.999), eps=1e-4, weight_decay=1e-4, freeze_steps=6)
    schedule = LinearWarmupLinearDecay(ours, max_updates=40, warmup_updates=0, warmup_init_lr=0.0, min_lr=1e-9)
    same_gradients(fs_opt, fs_sched, ours, schedule, fs_params, our_params)


def test_bad_betas_are_a_one_line_error(data_bin):
    with pytest.raises(ValueError, match=r"--adam-betas must be two numbers such as '\(0.9, 0.999\)'"):
        fairseq_built(data_bin, "--optimizer", "radam", "--lr", "1e-3", "--adam-betas", "(0.9,)",
                      params=params_pair()[0])
