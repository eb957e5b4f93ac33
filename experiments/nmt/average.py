"""Checkpoint averaging: the mean of the parameters of the last N epoch checkpoints.

The RAdam paper's NMT evaluation (Liu et al., ICLR 2020, Sec. 3; original ``nmt/eval.sh``) averages the last
10 epoch checkpoints with fairseq's ``scripts/average_checkpoints.py --num-epoch-checkpoints 10`` before beam
search (the paper's text says 20). For parameters theta^(1..N) of N checkpoints::

    theta_avg = (1/N) sum_i theta^(i)

accumulated in float64 and cast back to each tensor's dtype. Integer tensors (counters, ids) are not averaged:
they must agree across checkpoints and are kept as they are.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def _load_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass existing epoch checkpoint files")
    try:  # weights_only: a file that would run code when unpickled is refused
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds objects other than tensors and plain values, which could run code when "
                         f"loaded; it was not loaded (average only checkpoints of this project)") from e
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} has no 'model' entry; expected a torch.save dict with the model state_dict "
                         "under 'model'")
    return checkpoint["model"]


def average_checkpoints(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``"model"`` state_dicts stored in ``paths`` (float64 sum, original dtypes)."""
    if not paths:
        raise ValueError("average_checkpoints got no checkpoint paths; pass at least one epoch checkpoint")
    first = _load_model_state(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first.items()}
    for path in paths[1:]:
        state = _load_model_state(path)
        if state.keys() != sums.keys():
            diff = sorted(set(state) ^ set(sums))
            raise ValueError(f"{path} holds other parameters than {paths[0]} (differ: {diff[:5]}); "
                             "average checkpoints of one model only")
        for k, v in state.items():
            if v.is_floating_point():
                sums[k] += v.double()
            elif not torch.equal(v, sums[k]):
                raise ValueError(f"integer tensor {k!r} differs between checkpoints; cannot average it")
    n = len(paths)
    return {k: (s / n).to(first[k].dtype) if first[k].is_floating_point() else s for k, s in sums.items()}
