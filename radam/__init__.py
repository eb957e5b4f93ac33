"""RAdam and the Adam variants of "On the Variance of the Adaptive Learning Rate and Beyond".

Liu, Jiang, He, Chen, Liu, Gao, Han, ICLR 2020 (arXiv:1908.03265).
Original code: https://github.com/LiyuanLucasLiu/RAdam

    from radam import RAdam, Adam, theory, schedules

The optimizers and schedules need only PyTorch; `radam.theory` (the variance analysis) also needs NumPy and
is imported on first use.
"""

from radam import diagnostics, schedules
from radam.adam import Adam
from radam.radam import RAdam

__all__ = ["RAdam", "Adam", "theory", "schedules", "diagnostics"]
__version__ = "0.2.0"


def __getattr__(name: str):
    if name == "theory":  # NumPy only where it is used
        import importlib

        return importlib.import_module("radam.theory")
    raise AttributeError(f"module 'radam' has no attribute {name!r}")
