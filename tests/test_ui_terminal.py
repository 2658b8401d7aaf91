"""The README's run command in a real terminal: tmux starts `python3 -m lora_tui`
in a 100x30 pane, we read the pane until the first screen is there, press q, and
the program ends cleanly. Catches what Pilot cannot: the console entry point,
terminal set-up and tear-down, and start-up imports.
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
