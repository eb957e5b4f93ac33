"""radam.RAdam and radam.Adam (Adam-2k) wrapped as fairseq optimizers, with dataclass configs.

fairseq builds an optimizer as ``OptimizerClass(cfg, params)`` from the registered dataclass (its fields become
the command-line flags) and drives it through ``FairseqOptimizer``: ``set_lr`` from the lr scheduler on every
update, ``step``, ``state_dict``. The wrappers hold the real ``torch.optim.Optimizer`` in ``self._optimizer``;
all of the arithmetic is in radam/ (the maths is in the docstrings of radam/radam.py and radam/adam.py).
"""

# No `from __future__ import annotations`: fairseq reads the dataclass field types as real types.
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, List, Tuple

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf

import radam


def parse_betas(betas: Any) -> Tuple[float, float]:
    """fairseq passes --adam-betas as the string '(0.9, 0.999)' (or a list from a YAML config)."""
    text = betas if isinstance(betas, str) else ",".join(
        map(str, OmegaConf.to_container(betas) if OmegaConf.is_config(betas) else betas))
    try:
        values = tuple(float(p) for p in text.strip().strip("()[]").split(",") if p.strip())
    except ValueError:
        values = ()
    if len(values) != 2:
        raise ValueError(f"--adam-betas must be two numbers such as '(0.9, 0.999)', got {betas!r}")
    return values


def first_lr(lr: Any) -> float:
    """fairseq's --lr is a list (one lr per epoch for the `fixed` scheduler); the schedulers start from lr[0]."""
    return float(lr[0] if isinstance(lr, Collection) else lr)


@dataclass
class AdamBaseConfig(FairseqDataclass):
    adam_betas: Any = field(default="(0.9, 0.999)", metadata={"help": "betas (b1, b2)"})
    adam_eps: float = field(default=1e-8, metadata={"help": "eps, added to sqrt(v_t)"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay: theta *= 1 - lr wd"})
    lr: List[float] = II("optimization.lr")


@dataclass
class RAdamConfig(AdamBaseConfig):
    threshold: float = field(default=5.0, metadata={
        "help": "rectify when rho_t > threshold: 5 = original code and torch, 4 = the paper's rule"})
    degenerated_to_sgd: ChoiceEnum(["true", "false"]) = field(default="true", metadata={
        "help": "before rectification: true = SGD with bias-corrected momentum (paper), false = no step"})


@dataclass
class Adam2kConfig(AdamBaseConfig):
    freeze_steps: int = field(default=2000, metadata={
        "help": "Adam-2k: the first N updates only update v (theta, m, weight decay frozen); 0 = plain Adam"})


class _RadamOptimizer(FairseqOptimizer):
    """What both wrappers share: flat fp32 parameters (--fp16) are fine, the updates are elementwise."""

    @property
    def supports_flat_params(self) -> bool:
        return True

    def common_config(self) -> dict:
        return {"lr": first_lr(self.cfg.lr), "betas": parse_betas(self.cfg.adam_betas), "eps": self.cfg.adam_eps,
                "weight_decay": self.cfg.weight_decay}


@register_optimizer("radam", dataclass=RAdamConfig)
class FairseqRAdam(_RadamOptimizer):
    """radam.RAdam (Algorithm 2 of the paper) with decoupled weight decay, as the original NMT runs."""

    def __init__(self, cfg: RAdamConfig, params):
        super().__init__(cfg)
        self._optimizer = radam.RAdam(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> dict:
        """The arguments of radam.RAdam; fairseq also uses them to override a checkpoint's saved options."""
        return {**self.common_config(), "threshold": float(self.cfg.threshold),
                "degenerated_to_sgd": str(self.cfg.degenerated_to_sgd) == "true", "decoupled_weight_decay": True}


@register_optimizer("adam_2k", dataclass=Adam2kConfig)
class FairseqAdam2k(_RadamOptimizer):
    """radam.Adam with freeze_steps: fairseq's Adam arithmetic, the first N updates only accumulate v."""

    def __init__(self, cfg: Adam2kConfig, params):
        super().__init__(cfg)
        self._optimizer = radam.Adam(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> dict:
        return {**self.common_config(), "freeze_steps": int(self.cfg.freeze_steps)}
