"""Reliability of run directories without training (issue 10 items 2, 4, 6, 7): one writer decided
atomically, bounded waits, stop escalating to SIGKILL, honest resumes, corrupted run directories."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lora_tui.core.run import launcher
from lora_tui.core.run.adapters import AdapterError, find_adapter
from lora_tui.core.config import Config, load_config, save_config
from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory, RunError
from tests.support.training import no_model_config, stubborn_trainer
from tests.support.wait import wait_until


def _fake_run(tmp_path: Path, hello_data: Path, *, state="stopped", step=8, checkpoints=(4,), adapter=False,
              r=4, lora_r_now=None) -> RunDirectory:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(no_model_config(hello_data, f"lora.r={lora_r_now or r}"), run.config_path)
    run.write_status(state, step=step, max_steps=8)
    for n in checkpoints:
        ckpt = run.checkpoints_dir / f"checkpoint-{n}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": Config().lora.alpha,
                                                                  "base_model_name_or_path": "x"}))
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": n, "max_steps": 8}))
        (ckpt / "adapter_model.safetensors").write_bytes(b"")  # a checkpoint's files, as checkpoints.py checks them
        (ckpt / "optimizer.pt").write_bytes(b"")
        (ckpt / CHECKPOINT_MARKER).write_text(str(n))
    if adapter:
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text(json.dumps({"r": r, "base_model_name_or_path": "x"}))
    return run


def _race(fn, *args_list):
    barrier = threading.Barrier(len(args_list))
    results = [None] * len(args_list)

    def go(i, args):
        barrier.wait()
        try:
            results[i] = ("ok", fn(*args))
        except RunError as exc:
            results[i] = ("refused", str(exc))

    threads = [threading.Thread(target=go, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _wait_unlocked(run: RunDirectory, timeout: float = 60) -> None:
    """Let the winner's trainer let go of the run before the test ends: a courtesy wait, not a check
    (as before: a run still locked after the timeout does not fail the test)."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not run.is_locked(), timeout)


def test_two_launches_at_the_same_instant_one_wins(tmp_path, hello_data):
    target = tmp_path / "same"
    results = _race(lambda c: launcher.start_run(c, target), (no_model_config(hello_data, "lora.r=4"),), (no_model_config(hello_data, "lora.r=8"),))
    kinds = sorted(k for k, _ in results)
    assert kinds == ["ok", "refused"], results
    refused = next(m for k, m in results if k == "refused")
    assert "refused" in refused or "already exists" in refused
    winner_r = next(r for (k, _), r in zip(results, (4, 8)) if k == "ok")
    assert load_config(target / "config.yaml").lora.r == winner_r  # the loser wrote nothing
    _wait_unlocked(RunDirectory(target))


def test_two_resumes_at_the_same_instant_one_wins(tmp_path, hello_data):
    run = _fake_run(tmp_path, hello_data)
    results = _race(launcher.resume_run, (run.path,), (run.path,))
    assert sorted(k for k, _ in results) == ["ok", "refused"], results
    _wait_unlocked(run)


def test_resume_says_which_checkpoint_and_which_steps_are_trained_again(tmp_path, hello_data, monkeypatch):
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    run = _fake_run(tmp_path, hello_data, checkpoints=(2, 4), step=8)
    note = launcher.resume_run(run.path).resume_note
    assert "checkpoint-4 (step 4)" in note and "steps 5-8 are trained again" in note


def test_a_long_runs_end_is_read_from_the_end_of_its_events(tmp_path, hello_data):
    """events.jsonl of a long run is larger than one read_events slice (8 MiB): the steps trained again on
    resume and the final training loss come from its end, not from wherever the first slice stops."""
    from lora_tui.core.run import runs
    from lora_tui.core.run.claim import plan_resume

    run = _fake_run(tmp_path, hello_data, checkpoints=(4,), step=8)
    run.status_path.write_text("{ torn")  # status.json unreadable: the events decide
    pad = "x" * 200
    steps = 40_000
    with open(run.events_path, "w") as fh:
        fh.write(json.dumps({"seq": 1, "type": "started", "max_steps": steps}) + "\n")
        for step in range(1, steps + 1):
            fh.write(json.dumps({"seq": step + 1, "type": "step", "step": step, "loss": 1 / step, "pad": pad}) + "\n")
    assert run.events_path.stat().st_size > runs.EVENTS_READ_BYTES
    assert max(e["step"] for e in run.read_events() if e["type"] == "step") < steps  # one slice: not the end
    assert run.last_loss() == 1 / steps
    assert f"steps 5-{steps} are trained again" in plan_resume(run, load_config(run.config_path)).message


def test_resume_without_checkpoint_keeps_the_adapter_or_says_from_scratch(tmp_path, hello_data, monkeypatch):
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    run = _fake_run(tmp_path, hello_data, checkpoints=(), adapter=True)
    with pytest.raises(RunError, match="no complete checkpoint"):
        launcher.resume_run(run.path)
    assert (run.adapter_dir / "adapter_config.json").exists()
    (tmp_path / "b").mkdir()
    other = _fake_run(tmp_path / "b", hello_data, checkpoints=(), step=3)
    assert "starts again from step 0" in launcher.resume_run(other.path).resume_note


def test_resume_after_lora_r_changed_names_the_setting(tmp_path, hello_data, monkeypatch):
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    run = _fake_run(tmp_path, hello_data, r=4, lora_r_now=8)
    with pytest.raises(RunError) as info:
        launcher.resume_run(run.path)
    assert "lora.r=8" in str(info.value) and "lora.r=4" in str(info.value) and "checkpoint-4" in str(info.value)


def test_relative_model_folder_is_stored_resolved(tmp_path, hello_data, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = launcher._absolute_data(no_model_config(hello_data, "model.name=models/mine"))
    assert config.model.name == str((tmp_path / "models" / "mine").resolve())
    assert launcher._absolute_data(no_model_config(hello_data, "model.name=org/hub-model")).model.name == "org/hub-model"


def test_max_steps_zero_and_fifo_data_are_refused_before_anything_is_written(tmp_path, hello_data):
    with pytest.raises(RunError, match="max_steps=0"):
        launcher.start_run(no_model_config(hello_data, "training.max_steps=0"), tmp_path / "zero")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(RunError, match="FIFO"):
        launcher.start_run(no_model_config(fifo), tmp_path / "fifo")
    assert not (tmp_path / "zero").exists() and not (tmp_path / "fifo").exists()


def test_torn_last_event_line_does_not_swallow_the_next(tmp_path):
    run = RunDirectory(tmp_path)
    run.events_path.write_text('{"seq": 1, "type": "log", "message": "a"}\n{"seq": 2, "type": "st')
    run.append_event("log", message="after the tear")
    assert [e.get("message") for e in run.read_events()] == ["a", "after the tear"]


def test_status_write_leaves_no_temp_file_when_the_disk_is_full(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        run.write_status("running")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_disk_full_failure_is_explained_and_partial_saves_removed(tmp_path):
    from lora_tui.core.train import run_guard

    run = RunDirectory(tmp_path)
    good = run.checkpoints_dir / "checkpoint-2"
    good.mkdir(parents=True)
    (good / CHECKPOINT_MARKER).write_text("2")
    (run.checkpoints_dir / "checkpoint-4").mkdir()  # cut short: no marker
    (tmp_path / ".adapter.tmp-123").mkdir()
    (tmp_path / ".status.json.tmp-9").write_text("{")
    reason, fix = run_guard.explain(RuntimeError("[enforce fail] file write failed"), run)
    assert reason.startswith("disk full:") and "MB free at" in reason and "--resume" in fix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["checkpoint-2"]
    assert run_guard.explain(ValueError("other"), run) is None


def test_attach_on_garbage_status_returns(tmp_path, hello_data, monkeypatch):
    from lora_tui.commands import progress

    run = RunDirectory(tmp_path)
    save_config(no_model_config(hello_data), run.config_path)
    run.status_path.write_text("\x00garbage{{{")
    run.events_path.write_text('{"seq": 1, "type": "step", "step": "x"}\nnot json\n')
    monkeypatch.setattr(progress, "NO_TRAINER_WAIT_S", 0.5)
    import io

    out = io.StringIO()
    started = time.monotonic()
    progress.follow(run, out=out)
    assert time.monotonic() - started < 10
    text = out.getvalue()
    assert "status.json cannot be read" in text, text


def test_stop_kills_a_trainer_that_ignores_it(tmp_path, hello_data):
    run = RunDirectory(tmp_path / "stuck")
    run.path.mkdir()
    save_config(no_model_config(hello_data), run.config_path)
    proc = stubborn_trainer(run)
    state = launcher.stop_run(run, wait=1.0, kill_after_wait=True)
    assert proc.wait(20) == -signal.SIGKILL
    assert "killed it (SIGKILL)" in run.kill_note and state == "stopped"
    assert run.read_events()[-1]["type"] == "stopped" and "SIGKILL" in run.read_events()[-1]["reason"]


def test_adapter_deleted_from_a_finished_run_is_named(tmp_path, hello_data):
    run = _fake_run(tmp_path, hello_data, state="finished", checkpoints=(4,))
    for kwargs in ({}, {"allow_checkpoint": False}):  # chat, export
        with pytest.raises(AdapterError) as info:
            find_adapter(run.path, **kwargs)
        message = str(info.value)
        assert "is missing" in message and "wait for" not in message and "checkpoint-4" in message


def _cli(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


@pytest.mark.parametrize("damage", ["garbage_status", "garbage_config", "no_config_events_folder", "huge_event_line"])
def test_corrupted_run_directories_give_one_line_answers(tmp_path, hello_data, damage):
    run = _fake_run(tmp_path, hello_data, state="finished", checkpoints=())
    if damage == "garbage_status":
        run.status_path.write_bytes(b"\xff\xfe garbage")
    elif damage == "garbage_config":
        run.config_path.write_text("model: [unclosed\n  - : :")
    elif damage == "no_config_events_folder":
        run.events_path.mkdir()
    else:
        run.events_path.write_bytes(b"x" * (9 * 2**20))
    for args in (["runs", "--dir", str(tmp_path)], ["attach", str(run.path), "--no-follow"],
                 ["export", str(run.path)], ["chat", str(run.path), "--prompt", "hi"]):
        result = _cli(*args)
        assert "Traceback" not in result.stderr + result.stdout, (args, result.stderr[-2000:])
