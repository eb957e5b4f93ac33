"""Shared fixtures for the harness tests: composed configs, a prepared Ding corpus, run.py in a subprocess.

The end-to-end tests run the real NMTTask on the Ding corpus (/usr/share/trans/de-en) with a tiny Transformer
and a handful of updates; the corpus is prepared once per session into a temporary RADAM_DATA. Loop-mechanics
tests that need many fast runs use tests/regression_task.py (a real least-squares task, same contract).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.loop import TIMING_KEYS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
TEST_CONFIGS = REPO / "tests" / "configs"
DING_FILE = Path("/usr/share/trans/de-en")

# A Transformer small enough for a few CPU updates per second, and an evaluation on a few sentences.
TINY_NMT = [
    "task=ding", "model=transformer_cpu", "model.encoder_layers=1", "model.decoder_layers=1",
    "model.embed_dim=32", "model.ffn_dim=64", "model.heads=2", "model.dropout=0.1",
    "task.max_tokens=512", "task.valid_subset=40", "task.test_subset=8", "task.beam=2", "task.num_avg_checkpoints=2",
    "trainer.threads=1", "trainer.progress_bar=false",
]
REGRESSION = ["hydra.searchpath=[file://" + str(TEST_CONFIGS) + "]", "task=regression", "model=mlp",
              "trainer.threads=1", "trainer.progress_bar=false"]


@pytest.fixture
def one_thread():
    """Tiny tensors and models: intra-op threads only add overhead (and jitter on a shared 2-core CI machine)."""
    import torch  # here, so that the tests without torch do not pay for importing it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RunsCode:
    """A pickled object that creates ``marker`` when it is unpickled: what a malicious file does. Tests check that
    loading a file holding one is refused and the marker never appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def compose_cfg(*overrides: str):
    """The composed (unresolved) config, as run.py would see it, without running anything."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def events(run_dir: Path, drop_timing: bool = True) -> list[dict]:
    """metrics.jsonl of a run, minus the wall-clock fields that legitimately differ between reruns."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in out] if drop_timing else out


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


# torch.compile's kernel cache of this test session only: a cache shared with other processes on the machine
# (other sessions, other ISA settings) was seen to hand a compiled run a broken kernel (malloc corruption).
INDUCTOR_CACHE = tempfile.mkdtemp(prefix="radam-tests-inductor-")
atexit.register(shutil.rmtree, INDUCTOR_CACHE, ignore_errors=True)


def run_env(data_root: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0",
           "TORCHINDUCTOR_CACHE_DIR": INDUCTOR_CACHE, **extra}
    env.pop("WANDB_API_KEY", None)
    if data_root is not None:
        env["RADAM_DATA"] = str(data_root)
    return env


def run_py(*args: str, data_root: Path | None = None, timeout: float = 1200, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` from the repository root; raises with its output if it fails and check is set.

    The time limit is generous (at least 20 minutes, whatever the caller asks; the runs here take seconds on an
    idle machine); a run that exceeds it skips the test with the reason instead of failing it: on a loaded CI
    machine wall-clock time proves nothing."""
    timeout = max(timeout, 1200)
    try:
        proc = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env=env or run_env(data_root))
    except subprocess.TimeoutExpired:
        pytest.skip(f"run.py did not finish within {timeout:.0f} s (machine overloaded): {' '.join(args)[:200]}")
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def ding_data(tmp_path_factory) -> Path:
    """A data root (RADAM_DATA) holding the prepared Ding corpus, prepared once per session."""
    if not DING_FILE.exists():
        pytest.skip(f"{DING_FILE} is missing (Debian package trans-de-en)")
    root = tmp_path_factory.mktemp("radam_data")
    run_py(*TINY_NMT, "trainer.max_updates=1", "task.test_subset=1", "trainer.grad_histogram_updates=[]",
           f"hydra.run.dir={root / 'prepare_run'}", data_root=root)
    return root
