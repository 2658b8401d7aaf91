"""Who owns a run, and what a kill at the worst moment leaves (issue 25 items 2, 4, 5): the owner is the live
trainer process, not a lock file anyone can delete; a kill right after the final checkpoint resumes to the
same adapter without a step beyond the end; a finished run is never re-opened; a FIFO as the stop request
or the probe cache never hangs. Real trainers on the tiny random model, real kill -9, real FIFOs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_tui.core.run.launcher import resume_run, start_run
from lora_tui.core.run.runs import RunDirectory, RunError
from tests.support.training import train_only_config, wait_done, wait_run


def _cli(*args, timeout=180, env=None):
    return subprocess.run([sys.executable, "-m", "lora_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _seqs(run: RunDirectory) -> list[int]:
    return [e["seq"] for e in run.read_events()]


@pytest.mark.parametrize("damage", ["removed", "replaced"])
def test_a_deleted_or_replaced_lock_file_never_lets_a_second_trainer_in(tiny_model_dir, train_file, tmp_path, damage):
    """Issue 25 item 2: with trainer.lock removed (or replaced by a new file) mid-run, `runs` said "dead",
    `stop` said no trainer was running and left it training, and --resume started a second trainer."""
    run = start_run(train_only_config(tiny_model_dir, train_file, "training.max_steps=4000", "training.save_steps=0"),
                    tmp_path / "run")
    wait_run(lambda: any(e["type"] == "step" for e in run.read_events()), run, what="the first step")
    run.lock_path.unlink()
    if damage == "replaced":
        run.lock_path.write_text("12345")
    assert run.state() == "running"
    listed = json.loads(_cli("runs", "--dir", tmp_path, "--json").stdout)
    assert [r["state"] for r in listed] == ["running"], listed
    resumed = _cli("train", "--resume", run.path, "--detach")
    assert resumed.returncode == 2 and "already running" in resumed.stderr, resumed.stdout + resumed.stderr
    with pytest.raises(RunError):
        resume_run(run.path)
    stopped = _cli("stop", run.path, "--wait", "120")
    assert stopped.returncode == 0 and "State: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert wait_done(run) == "stopped"
    starts = [e for e in run.read_events() if e["type"] == "started"]
    seqs = _seqs(run)
    assert len(starts) == 1 and len(seqs) == len(set(seqs)), "a second trainer wrote into the run"


def _tensors(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def _end_config(model: Path, train: Path, valid: Path):
    """4 steps, a checkpoint every 2, a constant rate (a step past the end would change the adapter) and a
    large validation set: the final evaluation after checkpoint-4 leaves seconds to kill the trainer in."""
    from lora_tui.core.config import apply_overrides
    from tests.support.training import tiny_config

    return apply_overrides(tiny_config(model, (train, valid)), [
        "training.max_steps=4", "training.save_steps=2", "training.eval_steps=3", "training.scheduler=constant"])


@pytest.fixture
def big_validation(tmp_path) -> Path:
    from tests.support.training import rows

    path = tmp_path / "valid.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(240)))
    return path


def test_kill_9_after_the_final_checkpoint_resumes_to_the_same_adapter(tiny_model_dir, train_file, big_validation,
                                                                       tmp_path):
    """Issue 25 item 4: kill -9 after checkpoint-4 of 4 (before the adapter is saved), then --resume, trained
    a fifth step ("step 5/4") and the adapter differed from the uninterrupted run's."""
    from lora_tui.core.run.runs import CHECKPOINT_MARKER

    whole = start_run(_end_config(tiny_model_dir, train_file, big_validation), tmp_path / "whole")
    assert wait_done(whole, timeout=900) == "finished", whole.log_path.read_text()[-3000:]
    killed = start_run(_end_config(tiny_model_dir, train_file, big_validation), tmp_path / "killed")
    final = killed.checkpoints_dir / "checkpoint-4" / CHECKPOINT_MARKER
    wait_run(lambda: final.exists() or killed.adapter_dir.exists(), killed, timeout=900, what="checkpoint-4")
    os.kill(killed.read_status()["pid"], signal.SIGKILL)
    assert not killed.adapter_dir.exists(), "the adapter was saved before the kill: no window hit"
    assert wait_done(killed) == "dead"
    resume_run(killed.path)
    assert wait_done(killed, timeout=900) == "finished", killed.log_path.read_text()[-3000:]
    steps = [e["step"] for e in killed.read_events() if e["type"] == "step"]
    assert max(steps) == 4 and killed.read_status()["step"] == 4, steps
    a, b = _tensors(whole.adapter_dir), _tensors(killed.adapter_dir)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "resumed adapter differs"
    ends = [e for e in killed.read_events() if e["type"] == "finished"]
    whole_end = [e for e in whole.read_events() if e["type"] == "finished"][-1]
    # compared by type, not as the file's last line: the system sampler may write one sample after "finished"
    assert ends[-1]["step"] == 4 and ends[-1]["train_loss"] == whole_end["train_loss"], (ends[-1], whole_end)


@pytest.mark.parametrize("damage", ["torn finished line", "no events"])
def test_a_finished_run_with_a_torn_end_and_garbage_status_is_not_reopened(tmp_path, damage, finished_run):
    """Issue 25 item 4: a torn "finished" line (or empty events) plus a garbage status.json re-opened a finished
    run: --resume trained step 17/16 and rewrote the adapter."""
    run = RunDirectory(tmp_path / "copy")
    subprocess.run(["cp", "-a", str(finished_run), str(run.path)], check=True)
    events = run.events_path.read_bytes()
    if damage == "torn finished line":
        last = events.rstrip(b"\n").rfind(b"\n") + 1
        assert b'"finished"' in events[last:]
        run.events_path.write_bytes(events[:last + 30])
    else:
        run.events_path.write_bytes(b"")
    run.status_path.write_bytes(b"\xff\x00{{ garbage")
    adapter = _tensors(run.adapter_dir)
    result = _cli("train", "--resume", run.path, "--detach")
    assert result.returncode == 2 and "already finished" in result.stderr, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    again = _tensors(run.adapter_dir)
    assert all((adapter[k] == again[k]).all() for k in adapter) and not run.is_locked()


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, train_file, tmp_path_factory) -> Path:
    run = start_run(train_only_config(tiny_model_dir, train_file, "training.max_steps=4", "training.save_steps=2"),
                    tmp_path_factory.mktemp("finished") / "run")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    return run.path


@pytest.mark.parametrize("damage", ["marker only", "garbage trainer_state.json"])
def test_a_damaged_checkpoint_is_passed_over_with_a_plain_message(tmp_path, finished_run, damage, monkeypatch):
    """Issue 25 item 9: a fake checkpoint marker or a garbage trainer_state.json made the resumed trainer fail
    with a raw ValueError / JSONDecodeError; now the resume says which checkpoint is damaged and uses the one
    before it (or, when none is left, refuses with the fix)."""
    from lora_tui.core.run import launcher
    from lora_tui.core.run.runs import CHECKPOINT_MARKER

    run = RunDirectory(tmp_path / "copy")
    subprocess.run(["cp", "-a", str(finished_run), str(run.path)], check=True)
    subprocess.run(["rm", "-r", str(run.adapter_dir)], check=True)  # as if killed before the adapter was saved
    run.write_status("running", step=4)
    if damage == "marker only":
        damaged, used = run.checkpoints_dir / "checkpoint-9", "checkpoint-4"
        damaged.mkdir()
        (damaged / CHECKPOINT_MARKER).write_text("9")
    else:
        damaged, used = run.checkpoints_dir / "checkpoint-4", "checkpoint-2"
        (damaged / "trainer_state.json").write_text("{not json")
    monkeypatch.setattr(launcher, "_spawn", lambda *a, **k: 0)
    note = resume_run(run.path).resume_note
    assert f"{damaged.name} is damaged" in note and f"from {used}" in note, note
    for usable in run.checkpoints_dir.iterdir():
        if usable != damaged:
            subprocess.run(["rm", "-r", str(usable)], check=True)
    result = _cli("train", "--resume", run.path, "--detach")
    assert result.returncode == 2 and "is damaged" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "Fix:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_fifo_as_the_probe_cache_never_blocks_the_trainer(tiny_model_dir, train_file, tmp_path, monkeypatch):
    """Issue 25 item 5: a FIFO as the probe cache blocked the trainer forever in "loading"."""
    cache = tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / "probe.json")
    monkeypatch.setenv("LORA_TUI_CACHE", str(cache))
    run = start_run(train_only_config(tiny_model_dir, train_file, "training.max_steps=2", "training.save_steps=0",
                                      "training.probe=on"), tmp_path / "run")
    assert wait_done(run, timeout=400) == "finished", run.log_path.read_text()[-3000:]
    log = run.log_path.read_text()
    assert "the probe cache was not read" in log and "FIFO" in log, log[-3000:]
    assert (cache / "probe.json").is_file(), "the cache was not rewritten as a regular file"


def test_sigint_without_a_terminal_says_why_the_run_stops(tiny_model_dir, train_file, tmp_path):
    """Issue 25 item 11: SIGINT to a foreground `train` without a terminal stopped the run with no line saying why."""
    run = RunDirectory(tmp_path / "fg")
    proc = subprocess.Popen([sys.executable, "-m", "lora_tui", "train", f"model.name={tiny_model_dir}",
                             f"data.train={train_file}", "data.validation=", "data.max_seq_len=64",
                             "training.max_steps=4000", "training.save_steps=0", "training.eval_steps=0",
                             "--run-dir", str(run.path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in the bench test
    wait_run(lambda: any(e["type"] == "step" for e in run.read_events()), run, what="the first step")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert "SIGINT (Ctrl-C) without a terminal" in out and "stopping the run gracefully" in out, out[-2000:]
    assert proc.returncode == 0 and run.state() == "stopped"


def _arm_processes(marker: str) -> list:
    """The live (not zombie) processes whose command line holds ``marker``, each with ``.line`` its command line."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(proc.info["cmdline"] or [])
        if marker in line and proc.info["status"] != psutil.STATUS_ZOMBIE:
            proc.line = line
            found.append(proc)
    return found


def _bench_stepping(work: Path) -> bool:
    """Whether the ours arm's trainer (in the bench's temporary folder under ``work``) has logged a step."""
    return any(b'"type": "step"' in events.read_bytes() for events in work.glob("lora-tui-bench-*/ours/events.jsonl"))


def _when_removed(work: Path, bench):
    """A thread that notes the arm processes still alive at the moment the bench's temporary folder is removed."""
    import threading

    def watch() -> None:
        deadline = time.monotonic() + 600
        while list(work.glob("lora-tui-bench-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        thread.left = _arm_processes(str(work))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "timeout"])
def test_bench_leaves_no_process_running(tiny_model_dir, train_file, tmp_path, how):
    """Issue 25 item 7: after Ctrl-C the bench's 2 GB trainer kept running ~2 min in a deleted temp folder; after
    SIGTERM the wrapper and trainer stayed, and the temp folder; an expired --timeout left the trainer."""
    work = tmp_path / "tmp"
    work.mkdir()
    cmd = [sys.executable, "-m", "lora_tui", "bench", "--model", str(tiny_model_dir), f"data.train={train_file}",
           "data.max_seq_len=64", "--arms", "ours", "--steps", "100000", "--device", "cpu"]
    cmd += ["--timeout", "25"] if how == "timeout" else []
    bench = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "TMPDIR": str(work)}, start_new_session=True,
                             # SIGINT as a terminal's Ctrl-C finds the bench, even when pytest runs as a background
                             # job (which inherits SIGINT ignored: the bench would never see the Ctrl-C)
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        from tests.support.wait import wait_until

        wait_until(lambda: list(work.glob("lora-tui-bench-*/ours")), 300, what="the ours arm's folder")
        if how != "timeout":  # training, not loading: a trainer given SIGINT stopped gracefully after the bench left
            wait_until(lambda: _bench_stepping(work), 300, what="the ours arm's first step")
        at_removal = _when_removed(work, bench)  # who still runs the moment the temporary folder goes
        if how == "ctrl-c":  # a terminal sends SIGINT to its whole foreground process group
            os.killpg(bench.pid, signal.SIGINT)
        elif how == "sigterm":
            bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=300)
        at_removal.join(30)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
    assert not getattr(at_removal, "left", []), \
        f"running in the deleted temp folder: {[p.line[:120] for p in at_removal.left]}"
    left = _arm_processes(str(work))
    for proc in left:  # never leave them to the next test
        proc.kill()
    assert not left, f"still running after the bench ended: {[p.line[:120] for p in left]}"
    assert not list(work.glob("lora-tui-bench-*")), "the temporary folder was left"
    if how == "timeout":
        assert bench.returncode == 1 and "--timeout 25" in out, out[-2000:]
    else:
        assert bench.returncode == 130 and "Traceback" not in out, out[-2000:]
