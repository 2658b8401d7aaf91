"""Every wait longer than a few seconds says what is happening and moves (issue 24 item 5).

Before step 1 the trainer reports its start-up phases and the evaluation before training batch by batch
(``progress`` events, core/train/run_progress.py); `attach` and the foreground `train` print them, and on a
terminal keep one line ticking (the phase's clock, the latest step's elapsed time and ETA); the wizard's
Training screen shows the same with a clock ticking every second; `stop` says what it is waiting for, and
for how long. Real trainer processes on a tiny random Llama; the screen and terminal tests write the
events themselves, holding the run's lock as a trainer would.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import threading
import time

import pytest

from lora_tui.core.run.runs import RunDirectory
from tests.conftest import REPO
from tests.support.training import tiny_config, wait_done
from tests.support.wait import until, wait_until

pytestmark = pytest.mark.timeout(400)


def cli(*args: str, cwd=REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def test_the_trainer_reports_its_phases_and_the_evaluation_batches(tiny_model_dir, data_files, tmp_path):
    from lora_tui.core.run.launcher import start_run

    # 6 validation rows at one row per batch: six eval batches before step 1.
    run = start_run(tiny_config(tiny_model_dir, data_files, "training.micro_batch=1", "training.max_steps=2",
                                "training.eval_steps=0", "training.save_steps=0"), tmp_path / "run")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    events = run.read_events()
    kinds = [(e["type"], e.get("what"), e.get("message")) for e in events if e["type"] in ("progress", "started",
                                                                                          "eval", "step")]
    starts = [k[2] for k in kinds if k[1] == "start"]
    assert starts[:3] == ["reading the data", "loading the model", "evaluating before training"], kinds
    first_step = next(i for i, k in enumerate(kinds) if k[0] == "step")
    evals = [e for e in events if e["type"] == "progress" and e["what"] == "eval" and e["phase"] == "before"]
    assert evals and evals[0]["done"] == 1 and evals[-1]["done"] == evals[-1]["total"] == 6
    assert evals[-1]["message"] == "evaluating before training: 6/6 batches"
    assert all(kinds.index(("progress", "eval", e["message"])) < first_step for e in evals)
    history = cli("attach", str(run.path), "--no-follow")
    assert history.returncode == 0, history.stderr
    for words in ("reading the data...", "loading the model...", "evaluating before training: 1/6 batches",
                  "evaluating before training: 6/6 batches"):
        assert words in history.stdout, history.stdout


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _live_run(tmp_path, last_step: int):
    from screenshots.make_demo_run import write_demo_run

    run = RunDirectory(write_demo_run(tmp_path / "live", last_step=last_step, finished=False))
    return run, run.acquire_lock()


def test_attach_on_a_terminal_keeps_the_clocks_moving(tmp_path):
    """Between events the live line is rewritten: an evaluation's elapsed time grows, then a step's."""
    from lora_tui.commands.progress import follow

    run, lock = _live_run(tmp_path, last_step=10)
    run.append_event("progress", what="eval", phase="during", step=10, done=3, total=40, elapsed_s=4.0, eta_s=50.0,
                     message="evaluating at step 10: 3/40 batches")
    out = Terminal()
    ended = []
    follower = threading.Thread(target=lambda: ended.append(follow(run, out=out)), daemon=True)
    follower.start()
    try:
        wait_until(lambda: "evaluating at step 10: 3/40 batches, 4s, about 50s left" in out.getvalue(), 10,
                   what="the evaluation's line")
        # Rewritten as the seconds pass: elapsed and time left always add up to the 54 s it announced.
        wait_until(lambda: any(int(e) >= 6 and int(e) + int(left) == 54 for e, left in re.findall(
            r"3/40 batches, (\d+)s, about (\d+)s left", out.getvalue())), 20, what="its clock two seconds on")
        run.append_event("eval", step=10, phase="during", eval_loss=1.5, perplexity=4.48)
        run.append_event("step", step=11, max_steps=60, epoch=0.5, loss=1.4, lr=1e-4, grad_norm=0.5,
                         tokens_per_s=90.0, tokens_seen=1100, elapsed_s=30.0, eta_s=120.0)
        wait_until(lambda: "ETA 2m00s  elapsed 30s" in out.getvalue(), 10, what="the step's clocks")
        wait_until(lambda: any(int(e) >= 32 and 60 + int(s) + int(e) == 150 for s, e in re.findall(
            r"ETA 1m(\d+)s  elapsed (\d+)s", out.getvalue())), 20, what="the step's clocks two seconds on")
    finally:
        run.append_event("finished", step=11, adapter=str(run.adapter_dir), train_loss=1.4, eval_loss=1.5,
                         perplexity=4.48, runtime_s=40.0)
        run.write_status("finished")
        lock.close()
        follower.join(15)
    assert ended == ["finished"]


def test_training_screen_says_what_the_trainer_does_and_its_clock_ticks(tmp_path):
    from screenshots.fixed import FixedBackend
    from lora_tui.ui.app import make_app

    run, lock = _live_run(tmp_path, last_step=10)
    run.append_event("progress", what="eval", phase="during", step=10, done=3, total=40, elapsed_s=4.0, eta_s=50.0,
                     message="evaluating at step 10: 3/40 batches")

    async def go():
        app = make_app(run=str(run.path), backend=FixedBackend())
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            outcome = lambda: str(screen.query_one("#outcome").render())  # noqa: E731
            header = lambda: str(screen.query_one("#run-header").render())  # noqa: E731
            await until(pilot, lambda: "Evaluating at step 10: 3/40 batches, " in outcome(), what="what it does")
            first, said = header(), re.search(r"3/40 batches, (\d+)s, about (\d+)s left", outcome())
            assert said and int(said[1]) + int(said[2]) == 54, outcome()
            await until(pilot, lambda: (now := re.search(r"3/40 batches, (\d+)s", outcome())) is not None
                        and int(now[1]) >= int(said[1]) + 2, what="its clock two seconds on")
            assert header() != first, "the elapsed time and ETA move between steps"
            run.append_event("progress", what="start",
                             message="stopping at step 10: saving a checkpoint and the adapter")
            await until(pilot, lambda: "Stopping at step 10: saving a checkpoint and the adapter..." in outcome(),
                        what="the stop being carried out")

    try:
        asyncio.run(go())
    finally:
        lock.close()


def test_stop_says_what_it_waits_for(tiny_model_dir, train_file, tmp_path):
    from lora_tui.core.run.launcher import start_run
    from tests.support.training import train_only_config

    run = start_run(train_only_config(tiny_model_dir, train_file, "training.max_steps=5000", "training.micro_batch=1",
                                      "training.save_steps=0"), tmp_path / "runs" / "long")
    try:
        wait_until(lambda: any(e["type"] == "step" for e in run.read_events()), 240, what="the first step")
        stopped = cli("stop", str(run.path), cwd=tmp_path)
    finally:
        wait_done(run)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "It stops at the end of its current step" in stopped.stdout
    lines = [line for line in stopped.stdout.splitlines() if line.startswith("waiting for it: ")]
    assert lines and " of 2m00s" in lines[0], stopped.stdout
    assert "State: stopped" in stopped.stdout


def test_bench_says_which_arm_and_which_step(tiny_model_dir):
    """`bench` printed nothing for minutes per arm; now each running arm says what it is doing, with a clock
    (a log gets a line per arm and per new step at most every 15 s; a terminal one line rewritten)."""
    from tests.conftest import SAMPLE_DATA

    out = cli("bench", "--model", str(tiny_model_dir), "--steps", "2", "--arms", "ours,trl", "--device", "cpu",
              f"data.train={SAMPLE_DATA / 'train.jsonl'}", "data.max_seq_len=64", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    result = {"ours": "  lora-tui train (its defaults): ", "trl": "  (a) plain TRL, its defaults: "}
    for arm, label in result.items():
        done = next(i for i, line in enumerate(lines) if line.startswith(label))
        said = [line for line in lines[:done] if line.startswith(f"  {arm}: ")]
        assert said and all(re.search(r", \d+(m\d+)?s$", line) for line in said), out.stdout
