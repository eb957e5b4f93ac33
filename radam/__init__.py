"""RAdam and the Adam variants of "On the Variance of the Adaptive Learning Rate and Beyond".

Liu, Jiang, He, Chen, Liu, Gao, Han, ICLR 2020 (arXiv:1908.03265).
Original code: https://github.com/LiyuanLucasLiu/RAdam

    from radam import RAdam, Adam, theory, schedules
"""

from radam import schedules, theory
from radam.adam import Adam
from radam.radam import RAdam

__all__ = ["RAdam", "Adam", "theory", "schedules"]
__version__ = "0.1.0"
