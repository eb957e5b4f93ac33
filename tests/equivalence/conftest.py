"""The fairseq equivalence suite (issue 13): our NMT harness against fairseq-fixed 0.12.3.1's own code.

Every test here needs fairseq, which is not a dependency (it pins hydra-core 1.3.2): the modules skip with a
reason where it does not import, so the default suite passes without it. ``make fairseq-check`` builds
``.venv-fairseq`` once (docs/fairseq.md) and runs this folder there.

Data: the Ding dictionary (Debian package trans-de-en) prepared by the NMT task as for ``task=ding``
(Moses tokenization, lower-casing, 6000 BPE merges), once per session into ``$RADAM_DATA/ding`` when
RADAM_DATA is set (reused across sessions), else into a temporary folder (~30 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DING_FILE = Path("/usr/share/trans/de-en")


def pytest_configure(config):
    config.addinivalue_line("markers", "fairseq: compares with fairseq's own code; needs fairseq (make fairseq-check)")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.fairseq)


@pytest.fixture(scope="session")
def ding_task(tmp_path_factory):
    """The prepared NMT task on the Ding corpus (``max_tokens`` 600, label smoothing 0.1, seed 1)."""
    if not DING_FILE.exists():
        pytest.skip(f"{DING_FILE} is missing: apt-get install trans-de-en (or `make ding`)")
    import torch
    from experiments.nmt.task import NMTTask

    root = Path(os.environ["RADAM_DATA"]) if os.environ.get("RADAM_DATA") else tmp_path_factory.mktemp("data")
    task = NMTTask(corpus="ding", data_dir=str(root / "ding"), max_tokens=600, label_smoothing=0.1, seed=1,
                   ding_file=str(DING_FILE), urls=[])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task.prepare()
    finally:
        torch.set_num_threads(threads)
    return task
