"""The training engine on a tiny random Llama (real tokenizer and chat template), on CPU.

Runs go through the real path: `start_run` spawns the detached trainer process,
which uses TRL's SFTTrainer + PEFT (+ bitsandbytes for 4-bit), and the tests read
the run directory like any client would.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from lora_tui.core.config import load_config
from lora_tui.core.run.launcher import resume_run, start_run, stop_run, wait_until_started
from lora_tui.core.run.runs import RunDirectory, RunError, RunLocked
from lora_tui.core.run.started import Started
from tests.support.training import tiny_config, wait_done
from tests.support.wait import wait_until


def _sha(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, data_files) -> tuple[RunDirectory, str]:
    base_hash = _sha(tiny_model_dir)
    run = start_run(tiny_config(tiny_model_dir, data_files), tmp_path_factory.mktemp("runs") / "lora")
    state = wait_done(run)
    assert state == "finished", run.log_path.read_text()[-3000:]
    return run, base_hash


def test_lora_run_changes_adapter_and_not_base(finished_run, tiny_model_dir):
    from safetensors.torch import load_file

    run, base_hash = finished_run
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights), "the adapter file holds only LoRA weights"
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(float(v.abs().sum()) > 0 for v in lora_b), "lora_B starts at zero; training must move it"
    assert _sha(tiny_model_dir) == base_hash, "the base model directory must be untouched"


def test_training_moves_only_lora_parameters(tiny_model_dir, data_files, tmp_path):
    """In-process, with the recipe's own building blocks: every LoRA tensor that gets a
    gradient changes, and every base tensor stays bit-identical."""
    import torch
    from trl import SFTTrainer

    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.train.training import build_datasets, build_model, sft_config

    config = tiny_config(tiny_model_dir, data_files, "training.max_steps=3", "training.save_steps=0", "training.eval_steps=0")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, _ = build_datasets(config, tokenizer)
    model, targets = build_model(config, "cpu", "fp32")
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    run = RunDirectory(tmp_path)
    trainer = SFTTrainer(model=model, args=sft_config(config, run, "cpu", "fp32", False),
                         train_dataset=train_ds, processing_class=tokenizer)
    trainer.train()
    after = dict(model.named_parameters())
    lora = [k for k in before if "lora_" in k]
    base = [k for k in before if "lora_" not in k]
    assert lora and base
    assert all(not after[k].requires_grad for k in base)
    assert all(torch.equal(before[k], after[k]) for k in base), "base weights changed"
    assert all(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k), "some LoRA weights did not train"


def test_events_complete_and_ordered(finished_run):
    run, _ = finished_run
    events = run.read_events()
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "finished" and "started" in kinds
    started = next(e for e in events if e["type"] == "started")
    assert started["trainable_params"] < started["total_params"] and started["max_steps"] == 6
    # every key the trainer writes has its field in the typed record the readers use (core/run/started.py)
    assert Started.from_event(started).extra == {}, sorted(Started.from_event(started).extra)
    assert started["data"]["train"]["sha256"] and started["data"]["train"]["rows"] == 24
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    for e in steps:
        assert e["loss"] > 0 and e["lr"] is not None and e["epoch"] > 0 and e["tokens_seen"] > 0
    assert any(e.get("tokens_per_s") for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    # eval_steps=3 over 6 steps: step 3 during, and step 6's evaluation is the final one (issue 8: not repeated)
    assert [(e["step"], e["phase"]) for e in evals] == [(0, "before"), (3, "during"), (6, "after")]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"], "eval loss should fall on this easy task"
    assert {e["step"] for e in events if e["type"] == "checkpoint"} == {3, 6}
    status = run.read_status()
    assert status["state"] == "finished" and status["step"] == 6


def test_adapter_loads_with_plain_peft(finished_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = finished_run
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    tokenizer = AutoTokenizer.from_pretrained(run.adapter_dir)  # tokenizer + chat template saved beside it
    assert tokenizer.chat_template
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("hello", return_tensors="pt").input_ids
    plain = base(ids).logits
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run.adapter_dir)
    assert not torch.allclose(model(ids).logits, plain), "the adapter must change the model's output"


def test_existing_run_is_not_overwritten(finished_run, tiny_model_dir, data_files):
    run, _ = finished_run
    before = (run.adapter_dir / "adapter_model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already exists"):
        start_run(tiny_config(tiny_model_dir, data_files), run.path)
    assert (run.adapter_dir / "adapter_model.safetensors").read_bytes() == before


def test_stop_leaves_loadable_adapter_and_resume_after_kill(tiny_model_dir, data_files, tmp_path):
    """Stop gracefully, resume, kill -9, resume again: the run ends complete."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = tiny_config(tiny_model_dir, data_files, "training.max_steps=400", "training.save_steps=5",
                     "training.eval_steps=0", "training.learning_rate=0.001")
    run = start_run(config, tmp_path / "stoppable")
    wait_until_started(run)
    with pytest.raises(RunLocked):  # a second trainer on the same directory is refused
        RunDirectory(run.path).acquire_lock()
    _wait_for(lambda: any(e["type"] == "step" and e["step"] >= 2 for e in run.read_events()), run)
    assert stop_run(run, wait=120) == "stopped", run.log_path.read_text()[-3000:]
    stopped = next(e for e in run.read_events() if e["type"] == "stopped")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run.adapter_dir)
    assert run.last_checkpoint() is not None and int(run.last_checkpoint().name.split("-")[1]) == stopped["step"]

    # Resume, let it pass a new checkpoint, then kill -9 (no chance to clean up).
    resume_run(run.path)
    wait_until_started(run)
    _wait_for(lambda: any(e["type"] == "checkpoint" and e["step"] > stopped["step"] for e in run.read_events()), run)
    os.kill(run.read_status()["pid"], signal.SIGKILL)
    _wait_for(lambda: run.state() == "dead", run)
    # A half-written checkpoint (no completion marker) must be ignored.
    last_good = run.last_checkpoint()
    (run.checkpoints_dir / "checkpoint-9999").mkdir()
    assert run.last_checkpoint() == last_good

    resume_config = load_config(run.config_path)
    assert resume_config.training.max_steps == 400
    resume_run(run.path)
    wait_until_started(run)
    _wait_for(lambda: len([e for e in run.read_events() if e["type"] == "started"]) == 3, run)
    started = [e for e in run.read_events() if e["type"] == "started"][-1]
    assert started["resumed_from"] == str(last_good)
    first_step = _wait_for(lambda: next((e for e in run.read_events() if e["type"] == "step" and e["seq"] > started["seq"]), None), run)
    assert first_step["step"] == int(last_good.name.split("-")[1]) + 1
    assert stop_run(run, wait=120) == "stopped"
    seqs = [e["seq"] for e in run.read_events()]
    assert seqs == list(range(1, len(seqs) + 1)), "seq stays increasing across resumes"


def _wait_for(predicate, run: RunDirectory, timeout: float = 180):
    def holds_unless_failed():
        value = predicate()
        if not value and run.state() == "failed":
            raise AssertionError(run.log_path.read_text()[-3000:])
        return value

    return wait_until(holds_unless_failed, timeout, interval=0.2,
                      details=lambda: f"log:\n{run.log_path.read_text()[-3000:]}")


def test_qlora_4bit_runs_on_cpu(tiny_model_dir, data_files, tmp_path):
    pytest.importorskip("bitsandbytes")
    config = tiny_config(tiny_model_dir, data_files, "training.max_steps=2", "training.eval_steps=0",
                     "training.save_steps=0", "lora.r=4", preset="qlora")
    assert config.model.load_in == "4bit"
    run = start_run(config, tmp_path / "qlora")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    started = next(e for e in run.read_events() if e["type"] == "started")
    assert started["method"] == "QLoRA"
    assert started["quantized_layers"] == 2 * 7, "every targeted linear layer of the 2-layer base is 4-bit"
    assert started["adapter_dtypes"] == ["torch.float32"], "CPU trains adapters in fp32 (bf16 is ~15x slower there)"
    assert (run.adapter_dir / "adapter_model.safetensors").exists()


def test_bad_data_fails_with_reason_not_traceback(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from lora_tui.core.train.training import TrainingFailure, _build_datasets

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')  # no assistant turn
    config = tiny_config(tiny_model_dir, (bad, bad), "data.validation=")
    with pytest.raises(RunError, match="no usable row"):  # refused at launch (issue 16 item 6): no run dir
        start_run(config, tmp_path / "bad-run")
    assert not (tmp_path / "bad-run").exists()
    # The trainer keeps its own check (the data may change after the launch): a reason, not a traceback.
    with pytest.raises(TrainingFailure) as info:
        _build_datasets(config, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert "valid rows" in info.value.reason and "validate" in info.value.fix


def test_out_of_memory_is_explained():
    import torch

    from lora_tui.core.train.training import _explain

    reason, fix = _explain(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert reason == "Out of memory."
    for word in ("4-bit", "gradient checkpointing", "micro_batch", "max_seq_len"):
        assert word in fix


def test_early_stopping_on_eval_loss(tiny_model_dir, data_files, tmp_path):
    # A learning rate too small to move the eval loss: patience 1 stops at the second evaluation.
    config = tiny_config(tiny_model_dir, data_files, "training.max_steps=40", "training.eval_steps=2",
                     "training.save_steps=0", "training.learning_rate=1e-7", "training.early_stopping_patience=1")
    run = start_run(config, tmp_path / "early")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    finished = run.read_events()[-1]
    assert finished["early_stopped"] is True and finished["step"] == 4
    assert any("early stopping" in e.get("message", "") for e in run.read_events() if e["type"] == "log")


def test_cli_detach_runs_attach_stop(tiny_model_dir, data_files, tmp_path):
    """The command surface scripts rely on, through the real `lora-tui` entry point."""
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    run_dir = tmp_path / "runs" / "cli-run"
    started = cli("train", f"model.name={tiny_model_dir}", f"data.train={data_files[0]}", "data.validation=",
                  "data.max_seq_len=64", "training.max_steps=500", "training.micro_batch=2", "training.grad_accum=1",
                  "training.save_steps=0", "training.eval_steps=0", "--run-dir", str(run_dir), "--detach")
    assert started.returncode == 0, started.stderr
    assert f"lora-tui attach {run_dir}" in started.stdout
    run = RunDirectory(run_dir)
    _wait_for(lambda: any(e["type"] == "step" for e in run.read_events()), run)
    listing = json.loads(cli("runs", "--json").stdout)
    assert [(r["name"], r["state"]) for r in listing] == [("cli-run", "running")]
    stopped = cli("stop", "cli-run")  # by name, under ./runs
    assert stopped.returncode == 0 and "State: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    history = cli("attach", str(run_dir), "--no-follow")
    assert history.returncode == 0 and "stopped at step" in history.stdout and "started: LoRA" in history.stdout
    again = cli("train", f"model.name={tiny_model_dir}", "--run-dir", str(run_dir))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
