"""Reliability with the real trainer on the tiny random model (issue 10 items 2, 3, 6, 7): exact resume
after kill -9, SIGTERM to a foreground `train`, a stop during start-up, a FIFO as data, a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.config import Config, save_config
from lora_tui.core.run.launcher import resume_run, start_run, stop_run
from lora_tui.core.run.runs import RunDirectory
from tests.support.training import train_only_config, wait_done as _done, wait_run


def _config(model: Path, data: Path, *overrides: str) -> Config:
    return train_only_config(model, data, "training.max_steps=30", "training.save_steps=4", *overrides)


_wait = wait_run


def _tensors(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


# auto: micro_batch=auto re-decided on --resume could change the batches; the first start's choice is kept.
# token_budget: rows packed into bins of tokens_per_batch (auto) tokens; the bins and their order are the same.
@pytest.mark.parametrize("batch", [[], ["training.micro_batch=auto", "training.grad_accum=2"],
                                   ["training.batching=token_budget", "training.micro_batch=auto", "training.grad_accum=2"]],
                         ids=["explicit", "auto", "token_budget"])
def test_kill_9_after_a_checkpoint_then_resume_is_bit_identical(tiny_model_dir, train_file, tmp_path, batch):
    whole = start_run(_config(tiny_model_dir, train_file, *batch), tmp_path / "whole")
    assert _done(whole) == "finished", whole.log_path.read_text()[-3000:]

    killed = start_run(_config(tiny_model_dir, train_file, *batch), tmp_path / "killed")
    _wait(lambda: killed.last_checkpoint(), killed)
    os.kill(killed.read_status()["pid"], signal.SIGKILL)
    assert _done(killed) == "dead"
    kept = killed.last_checkpoint()
    assert kept is not None and int(kept.name.split("-")[1]) < 30, "killed before the end"
    note = resume_run(killed.path).resume_note
    assert kept.name in note
    assert _done(killed) == "finished", killed.log_path.read_text()[-3000:]
    a, b = _tensors(whole.adapter_dir), _tensors(killed.adapter_dir)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed adapter differs from the uninterrupted one"
    starts = [e for e in killed.read_events() if e["type"] == "started"]
    assert len(starts) == 2 and starts[0]["micro_batch"] == starts[1]["micro_batch"]
    assert starts[0].get("tokens_per_batch") == starts[1].get("tokens_per_batch")
    if "training.batching=token_budget" in batch:
        assert starts[0]["batching"] == "token_budget" and starts[0]["tokens_per_batch"] >= 64
    if batch:
        assert "resume" in starts[1]["engine_reasons"]["micro_batch"]


def test_sigterm_to_a_foreground_train_stops_the_run_gracefully(tiny_model_dir, train_file, tmp_path):
    run_dir = tmp_path / "fg"
    proc = subprocess.Popen([sys.executable, "-m", "lora_tui", "train", f"model.name={tiny_model_dir}",
                             f"data.train={train_file}", "data.validation=", "data.max_seq_len=64",
                             "training.max_steps=400", "training.save_steps=0", "training.eval_steps=0",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = RunDirectory(run_dir)
    _wait(lambda: any(e["type"] == "step" for e in run.read_events()), run)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert "SIGTERM: stopping the run gracefully" in out, out
    assert proc.returncode == 0 and run.state() == "stopped", out
    assert (run.adapter_dir / "adapter_model.safetensors").exists()


def test_stop_during_start_up_is_honoured(tiny_model_dir, train_file, tmp_path):
    run = start_run(_config(tiny_model_dir, train_file, "training.max_steps=200"), tmp_path / "early")
    stop_run(run)  # at once: the trainer is still importing torch and has not written a single event
    assert _done(run) == "stopped", run.log_path.read_text()[-3000:]
    assert run.read_events()[-1]["type"] == "stopped" and run.read_status()["step"] < 200


def test_fifo_as_data_fails_the_trainer_instead_of_hanging(tiny_model_dir, train_file, tmp_path):
    run = RunDirectory(tmp_path / "fifo-run")
    run.path.mkdir()
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    save_config(_config(tiny_model_dir, fifo), run.config_path)  # as if config.yaml was edited after the start
    result = subprocess.run([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    failed = run.read_events()[-1]
    assert failed["type"] == "failed" and "FIFO" in failed["reason"] and run.state() == "failed"


def test_full_disk_fails_plainly_and_resume_works_after_freeing_space(tiny_model_dir, train_file, small_disk):
    # The tiny model's checkpoint is ~3.6 MB (mostly tokenizer.json): 10 MB cannot hold it plus the margin.
    run = start_run(_config(tiny_model_dir, train_file, "training.max_steps=8"), small_disk / "run")
    assert _done(run) == "failed", run.log_path.read_text()[-3000:]
    failed = run.read_events()[-1]
    assert failed["type"] == "failed" and failed["reason"].startswith("disk full:")
    assert "MB needed" in failed["reason"] and "MB free at" in failed["reason"] and "--resume" in failed["fix"]
    assert run.read_status()["state"] == "failed"
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")], list(run.path.iterdir())
    # Issue 25 item 11: refused before step 1 (it trained up to the first checkpoint after the warning: 118 s lost)
    assert "checkpoint-4, the next save, so training was not started" in failed["reason"], failed["reason"]
    assert not any(e["type"] == "step" for e in run.read_events())

    subprocess.run(["mount", "-o", "remount,size=100m", str(small_disk)], check=True)
    assert "starts again from step 0" in resume_run(run.path).resume_note
    assert _done(run) == "finished", run.log_path.read_text()[-3000:]
