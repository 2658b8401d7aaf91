"""The README's run command in a real terminal: tmux starts `python3 -m lora_tui`
in a 100x30 pane, we read the pane until the first screen is there, press q, and
the program ends cleanly. Catches what Pilot cannot: the console entry point,
terminal set-up and tear-down, and start-up imports. Also `lora-tui train`'s Ctrl-C
question, answered by one key in a real terminal.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

FIRST_SCREEN = "Which model do you want to adapt?"


def _pane(session: str) -> str:
    result = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True)
    return result.stdout


def _wait_for(session: str, text: str, timeout: float) -> str:
    last = {"screen": ""}  # the last look, for the failure message

    def shows_text() -> str | None:
        last["screen"] = _pane(session)
        return last["screen"] if text in last["screen"] else None

    return wait_until(shows_text, timeout, interval=0.2, what=f"{text!r} to appear",
                      details=lambda: f"the pane shows:\n{last['screen']}")


def test_readme_run_command_opens_the_wizard(tmp_path, embedded_model_dir):
    session = f"lora-tui-test-{os.getpid()}"
    command = (f"cd {shlex.quote(str(REPO))} && LORA_TUI_RUNS={shlex.quote(str(tmp_path))} "
               f"{shlex.quote(sys.executable)} -m lora_tui; echo \"wizard exit status $?\"; sleep 60")
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    try:
        screen = _wait_for(session, FIRST_SCREEN, timeout=60)
        assert "1 Model" in screen and "Export" in screen  # the step bar
        _wait_for(session, "embedded: SmolLM2-135M-Instruct", timeout=30)  # the model table
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        screen = _wait_for(session, "wizard exit status", timeout=30)
        assert "wizard exit status 0" in screen
        assert "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.timeout(600)  # a real trainer starts: slower than the wizard alone on a busy machine
def test_train_ctrl_c_takes_one_key(tmp_path, tiny_model_dir, train_file):
    """Issue 24 item 8: in a terminal, Ctrl-C during a foreground `lora-tui train` asks stop / detach / continue,
    and the letter alone answers (no Enter); an arrow key is no answer and is asked about once, in one line."""
    from lora_tui.core.run.runs import RunDirectory

    session = f"lora-tui-train-{os.getpid()}"
    run_dir = tmp_path / "fg"
    train = [sys.executable, "-m", "lora_tui", "train", f"model.name={tiny_model_dir}", f"data.train={train_file}",
             "data.validation=", "data.max_seq_len=64", "training.max_steps=400", "training.save_steps=0",
             "training.eval_steps=0", "--run-dir", str(run_dir)]
    command = f"cd {shlex.quote(str(REPO))} && {shlex.join(train)}; echo \"train exit status $?\"; sleep 60"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    try:
        _wait_for(session, "step 2/400", timeout=240)
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        _wait_for(session, "[s]top it, [d]etach (Enter), or [c]ontinue watching?", timeout=30)
        subprocess.run(["tmux", "send-keys", "-t", session, "Up"], check=True)  # an arrow: 3 bytes, no answer
        screen = _wait_for(session, "Press s, d (or Enter) or c:", timeout=30)
        assert screen.count("[c]ontinue watching?") == 1, screen  # asked again once, briefly (was: 3 full copies)
        subprocess.run(["tmux", "send-keys", "-t", session, "s"], check=True)  # the letter, no Enter
        _wait_for(session, "Stopping: saving a checkpoint and the adapter", timeout=30)
        screen = _wait_for(session, "train exit status", timeout=240)
        assert "train exit status 0" in screen and "Traceback" not in screen
        assert RunDirectory(run_dir).state() == "stopped"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
