"""The tiny training set, config and waits the training tests share (test_training, test_final_eval,
test_reliability_training, test_hostile_runs)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_tui.core.config import Config, apply_overrides, apply_preset
from lora_tui.core.run.runs import RunDirectory
from tests.support.wait import wait_until

ENDED = ("finished", "failed", "stopped", "dead")


def rows(n: int = 24) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"Ahoy! {i} plus {i} is {2 * i}. — Cap'n LoRA"},
        ]})
    return out


def write_data_files(folder: Path) -> tuple[Path, Path]:
    """24 training rows and 6 validation rows (the ``data_files`` fixture in tests/conftest.py)."""
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows(24)))
    valid.write_text("".join(json.dumps(r) + "\n" for r in rows(30)[24:]))
    return train, valid


def tiny_config(model_dir: Path, data: tuple[Path, Path], *overrides: str, preset: str | None = None) -> Config:
    config = Config()
    if preset:
        apply_preset(config, preset)
    return apply_overrides(config, [
        f"model.name={model_dir}", f"data.train={data[0]}", f"data.validation={data[1]}",
        "data.max_seq_len=64", "training.micro_batch=4", "training.grad_accum=1", "training.learning_rate=0.01",
        "training.max_steps=6", "training.eval_steps=3", "training.save_steps=3", "lora.r=4", "lora.alpha=8",
        *overrides,
    ])


def no_model_config(data: Path, *overrides: str) -> Config:
    """A config whose model does not exist: a spawned trainer fails at once, nothing heavy runs."""
    return apply_overrides(Config(), [f"data.train={data}", "data.validation=", "model.name=/nonexistent/model",
                                      "training.max_steps=4", *overrides])


def train_only_config(model_dir: Path, train: Path, *overrides: str) -> Config:
    """``tiny_config`` without a validation set or evaluation: for the runs that are killed, stopped, resumed."""
    return tiny_config(model_dir, (train, ""), "training.eval_steps=0", *overrides)


def wait_run(predicate, run: RunDirectory, timeout: float = 240, what: str = ""):
    """``wait_until`` polled every 50 ms (a kill right after a checkpoint lands on it), the log tail on timeout."""
    return wait_until(predicate, timeout, interval=0.05, what=what,
                      details=lambda: f"log:\n{run.log_path.read_text()[-3000:]}")


def wait_done(run: RunDirectory, timeout: float = 240) -> str:
    """Wait for the run to end; return its final state."""
    def ended() -> str | None:
        state = run.state()
        return state if state in ENDED else None

    return wait_until(ended, timeout, interval=0.3, what="the run to end",
                      details=lambda: f"log:\n{run.log_path.read_text()[-3000:]}")


def stubborn_trainer(run: RunDirectory):
    """A process that holds the run's lock (flock, its pid in the lock file, status "running") and ignores
    SIGTERM: what `stop` must escalate against, never hang on. The caller kills it."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import fcntl, os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fh = open({str(run.lock_path)!r}, "a+"); fcntl.flock(fh, fcntl.LOCK_EX); fh.write(str(os.getpid())); fh.flush()
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    run.write_status("running", pid=proc.pid)
    return proc
