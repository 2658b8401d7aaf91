"""Real two-process runs on CPU (gloo), started the way a user starts them: the detached trainer
process launches both ranks through `accelerate launch`. Tiny random model, a few steps each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tui.core.config import Config, apply_overrides
from lora_tui.core.run.launcher import resume_run, start_run
from lora_tui.core.run.runs import RunDirectory, pid_alive
from tests.support.wait import wait_until


def _rows(n: int) -> list[dict]:
    # Different lengths on purpose: averaging must be per token across both ranks, not per rank.
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?" + " please" * (i % 3)},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}." + " Yes." * (i % 4)}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def data8(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(8)))
    return path


def _config(model: Path, data: Path, *overrides: str) -> Config:
    return apply_overrides(Config(), [
        f"model.name={model}", f"data.train={data}", "data.validation=", "data.val_fraction=0",
        "data.max_seq_len=64", "training.grad_accum=1", "training.learning_rate=0.01", "training.warmup_ratio=0",
        "training.eval_steps=0", "training.save_steps=0", "lora.r=4", "lora.alpha=8", "lora.dropout=0",
        # fp32: the averaging check compares adapters to 5% of the training movement, below bf16's rounding
        "training.scheduler=constant", "training.precision=fp32", *overrides])


def _wait(predicate, run: RunDirectory, timeout: float = 300, what: str = "") -> None:
    wait_until(predicate, timeout, interval=0.3, what=what,
               details=lambda: f"state {run.state()}; log tail:\n{_tail(run)}")


def _tail(run: RunDirectory, n: int = 4000) -> str:
    try:
        return run.log_path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _done(run: RunDirectory) -> bool:
    return run.state() in ("finished", "failed", "stopped", "dead") and not run.is_locked()


def _started(run: RunDirectory) -> dict:
    return next(e for e in run.read_events() if e["type"] == "started")


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_two_ranks_average_gradients_and_only_rank_0_writes(tiny_model_dir, data8, tmp_path):
    # 8 rows, global batch 8: every step sees every row, so 2 ranks x 4 rows must equal 1 process x 8 rows.
    two = start_run(_config(tiny_model_dir, data8, "training.devices=2", "training.micro_batch=4",
                            "training.max_steps=3"), tmp_path / "two")
    _wait(lambda: _done(two), two, what="the two-rank run")
    assert two.state() == "finished", _tail(two)
    one = start_run(_config(tiny_model_dir, data8, "training.devices=1", "training.micro_batch=8",
                            "training.max_steps=3"), tmp_path / "one")
    _wait(lambda: _done(one), one, what="the one-process run")
    assert one.state() == "finished", _tail(one)

    started = _started(two)
    assert started["world_size"] == 2 and started["strategy"] == "ddp"
    assert [r["rank"] for r in started["ranks"]] == [0, 1]
    pids = [r["pid"] for r in started["ranks"]]
    assert len(set(pids)) == 2 and not any(pid_alive(p) for p in pids), "both ranks must have exited"
    assert _started(one)["world_size"] == 1 and _started(one)["strategy"] == "single"
    # accelerate config written into the run directory, reusable as is.
    import yaml

    saved = yaml.safe_load((two.path / "accelerate_config.yaml").read_text())
    assert saved["num_processes"] == 2 and saved["use_cpu"] is True

    # One writer: one started/finished event, seq without gap or repeat, one adapter.
    events = two.read_events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("started") == 1 and types.count("finished") == 1
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3]
    assert (two.adapter_dir / "adapter_model.safetensors").is_file()
    assert not [p for p in two.path.iterdir() if p.name.startswith(".adapter")]

    a, b = _adapter(two.adapter_dir), _adapter(one.adapter_dir)
    assert a.keys() == b.keys()
    moved = max(float((b[k] - v).abs().max()) for k, v in _adapter_init(tiny_model_dir, b).items())
    assert moved > 1e-3, "the single-process adapter must have trained"
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 0.05 * moved, f"two ranks differ from the doubled batch by {worst} (training moved {moved})"


def _adapter_init(model_dir: Path, trained: dict) -> dict:
    """LoRA B starts at zero: the trained B matrices' distance from zero is how far training moved."""
    import torch

    return {k: torch.zeros_like(v) for k, v in trained.items() if "lora_B" in k}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True, timeout=timeout)


def test_kill_one_rank_fails_clearly_resume_continues_stop_ends_both(tiny_model_dir, data8, tmp_path):
    run_dir = tmp_path / "killed"
    started = _cli("train", f"model.name={tiny_model_dir}", f"data.train={data8}", "data.validation=",
                   "data.max_seq_len=64", "training.devices=2", "training.micro_batch=2", "training.max_steps=2000",
                   "training.save_steps=2", "training.eval_steps=0", "lora.r=4", "--run-dir", str(run_dir), "--detach")
    assert started.returncode == 0, started.stderr
    run = RunDirectory(run_dir)
    _wait(lambda: run.last_checkpoint() is not None, run, what="a complete checkpoint")
    ranks = _started(run)["ranks"]
    os.kill(ranks[1]["pid"], signal.SIGKILL)
    _wait(lambda: _done(run), run, what="the run to fail")
    assert run.state() == "failed"
    failed = [e for e in run.read_events() if e["type"] == "failed"][-1]
    assert "rank 1" in failed["reason"] and "SIGKILL" in failed["reason"], failed
    assert "--resume" in failed["fix"]
    assert not any(pid_alive(r["pid"]) for r in ranks), "no rank may be left running"
    checkpoint = int(run.last_checkpoint().name.split("-")[1])

    before = len(run.read_events())
    resume_run(run_dir)

    def after_resume() -> list[dict]:
        # Only events written after resume_run: the killed run's last step events (past its last complete
        # checkpoint) must not pass for steps of the resumed run.
        return run.read_events()[before:]

    _wait(lambda: any(e["type"] == "step" and e["step"] > checkpoint + 1 for e in after_resume()),
          run, what="steps after the resume")
    resumed = [e for e in after_resume() if e["type"] == "started"][-1]
    assert resumed["resumed_from"] and resumed["world_size"] == 2
    stopped = _cli("stop", str(run_dir), "--wait", "240")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _wait(lambda: _done(run), run, what="the stop")
    assert run.state() == "stopped"
    assert not any(pid_alive(r["pid"]) for r in resumed["ranks"]), "stop must end both ranks"
    supervisor = run.read_status().get("pid")
    _wait(lambda: not pid_alive(supervisor), run, timeout=20, what="the supervising trainer to exit")
    events = run.read_events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    attach = _cli("attach", str(run_dir), "--no-follow")
    assert attach.returncode == 0 and "stopped" in attach.stdout.lower()
