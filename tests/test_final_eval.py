"""The trainer evaluates once at the end (issue 8): transformers already evaluates the last
step when evaluation is on, so the recipe's own "after" evaluation must not repeat it."""

from __future__ import annotations

from lora_tui.core.run.launcher import start_run
from tests.support.training import tiny_config, wait_done


def _evals(run) -> list[dict]:
    return [e for e in run.read_events() if e["type"] == "eval"]


def test_one_final_evaluation_when_the_last_step_is_an_eval_step(tiny_model_dir, data_files, tmp_path):
    run = start_run(tiny_config(tiny_model_dir, data_files, "training.max_steps=4", "training.eval_steps=2"),
                    tmp_path / "run")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    evals = _evals(run)
    assert [(e["step"], e["phase"]) for e in evals] == [(0, "before"), (2, "during"), (4, "after")]
    finished = next(e for e in run.read_events() if e["type"] == "finished")
    assert finished["eval_loss"] == evals[-1]["eval_loss"]


def test_one_final_evaluation_when_the_last_step_is_between_eval_steps(tiny_model_dir, data_files, tmp_path):
    run = start_run(tiny_config(tiny_model_dir, data_files, "training.max_steps=3", "training.eval_steps=2"),
                    tmp_path / "run")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    assert [(e["step"], e["phase"]) for e in _evals(run)] == [(0, "before"), (2, "during"), (3, "after")]
