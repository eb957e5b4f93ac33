"""trainer.plateau_warning_update / stop_on_plateau_warning on real runs: the warmup study's model and lr on the
Ding corpus, where Adam-vanilla's gradients collapse within ~25 updates (Fig. 2) and RAdam's do not."""

from __future__ import annotations

import pytest

from experiments.loop import train
from experiments.task import UserError
from tests.conftest import REGRESSION, compose_cfg, run_py, summary

# the warmup study (configs/experiment/warmup_study.yaml) for its first 25 updates: lr 2e-3, its 2000-update
# schedule, small evaluation sets (evaluation only follows the training)
STUDY = ["task=ding", "model=transformer_cpu", "optimizer.lr=2e-3", "trainer.max_updates=25",
         "optimizer.scheduler.max_updates=2000", "trainer.diagnostics_interval=5", "trainer.plateau_warning_update=25",
         "trainer.grad_histogram_updates=[]", "task.valid_subset=40", "task.test_subset=8", "task.beam=2",
         "trainer.threads=1", "trainer.progress_bar=false"]


def test_adam_vanilla_is_warned_and_stopped_and_radam_is_not(ding_data, tmp_path):
    stopped = run_py(*STUDY, "optimizer=adam_vanilla", "trainer.stop_on_plateau_warning=true",
                     f"hydra.run.dir={tmp_path / 'vanilla'}", data_root=ding_data)  # exit 0: a sweep goes on
    s = summary(tmp_path / "vanilla")
    assert s["status"] == "plateau" and s["updates"] == 25
    assert "plateau warning at update 25" in s["plateau_warning"] and "RAdam" in s["plateau_warning"]
    assert "warmup" in s["plateau_warning"]
    assert sum("plateau warning" in line for line in (stopped.stdout + stopped.stderr).splitlines()) == 1
    fine = run_py(*STUDY, "optimizer=radam", "trainer.stop_on_plateau_warning=true",
                  f"hydra.run.dir={tmp_path / 'radam'}", data_root=ding_data)
    assert summary(tmp_path / "radam")["status"] == "completed"
    assert "plateau warning" not in fine.stdout + fine.stderr


@pytest.mark.slow  # one more run of the 4.8M-parameter model (~15 s of CPU, minutes on a loaded machine)
def test_the_warning_alone_does_not_stop_the_run(ding_data, tmp_path):
    proc = run_py(*STUDY, "optimizer=adam_vanilla", "trainer.max_updates=30", f"hydra.run.dir={tmp_path}",
                  data_root=ding_data)
    assert summary(tmp_path)["status"] == "completed" and summary(tmp_path)["updates"] == 30
    assert sum("plateau warning at update 25" in line for line in (proc.stdout + proc.stderr).splitlines()) == 1


def test_bad_plateau_options_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="needs the diagnostics: set trainer.diagnostics_interval"):
        train(compose_cfg(*REGRESSION, "trainer.stop_on_plateau_warning=true"), tmp_path / "a")
    with pytest.raises(UserError, match=r"trainer.plateau_warning_update=0 is invalid: use an integer >= 1 or null"):
        train(compose_cfg(*REGRESSION, "trainer.plateau_warning_update=0"), tmp_path / "b")
    with pytest.raises(UserError, match=r"trainer.stop_on_plateau_warning='yes' is invalid: use true or false"):
        train(compose_cfg(*REGRESSION, "trainer.stop_on_plateau_warning=yes"), tmp_path / "c")
