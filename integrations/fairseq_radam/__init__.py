"""A fairseq plugin: this project's RAdam and Adam-2k as `fairseq-train --optimizer radam | adam_2k`.

fairseq (https://github.com/facebookresearch/fairseq) is what the RAdam paper's NMT runs used (Liu et al.,
ICLR 2020, arXiv:1908.03265; original recipes: https://github.com/LiyuanLucasLiu/RAdam nmt/recipes.md). It
is not a dependency of this project: this folder is loaded by fairseq itself with `--user-dir`, and imports
only `radam` (this repository's optimizer package, which needs nothing but torch) and fairseq's own
optimizer API. Tested with fairseq-fixed 0.12.3.1 (fairseq 0.12.2 does not import on Python >= 3.11).

    pip install -e /path/to/this/repo          # or: export PYTHONPATH=/path/to/this/repo
    fairseq-train DATA -a transformer_iwslt_de_en --user-dir integrations/fairseq_radam \\
        --optimizer radam --adam-betas '(0.9, 0.999)' --weight-decay 1e-4 --threshold 5 ...
    fairseq-train DATA ... --optimizer adam_2k --freeze-steps 2000 --lr 3.086e-4 ...

Options (fairseq flags -> radam arguments): --lr (the peak lr; fairseq's --lr-scheduler sets it every update),
--adam-betas, --adam-eps, --weight-decay (decoupled, as fairseq's adam), and
    radam:   --threshold (rectify when rho_t > threshold; 5 = original code, 4 = the paper),
             --degenerated-to-sgd true|false (un-rectified steps: SGD with momentum, or no step)
    adam_2k: --freeze-steps N (the first N updates only update v; 0 = fairseq's Adam arithmetic)
docs/fairseq.md gives the fairseq-train command of each of the paper's five warmup-study variants.
"""

from . import optimizers  # noqa: F401  (registers "radam" and "adam_2k" with fairseq)
