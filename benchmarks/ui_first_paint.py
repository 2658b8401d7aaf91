"""Time from process start to the wizard's first screen, in a real terminal (tmux).

For each of N rounds: start `python3 -m lora_tui` in a detached 100x30 tmux pane,
poll the pane every 10 ms until the first screen's title is on it, then quit.
Baselines measured in the same run, the same way: a bare Textual app that paints
one line (the floor for any Textual program here), and `import torch` alone (what
the wizard must not wait for).

    python3 benchmarks/ui_first_paint.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BARE_APP = (
    "from textual.app import App\n"
    "from textual.widgets import Static\n"
    "class Bare(App):\n"
    "    def compose(self):\n"
    "        yield Static('bare textual app ready')\n"
    "Bare().run()\n"
)


def first_paint(command: str, marker: str, timeout: float = 60.0) -> float:
    session = f"paint-{os.getpid()}"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    started = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"cd {shlex.quote(str(REPO))} && {command}; sleep 30"], check=True)
    try:
        while time.perf_counter() - started < timeout:
            pane = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            if marker in pane:
                return time.perf_counter() - started
            time.sleep(0.01)
        raise RuntimeError(f"{marker!r} did not appear in {timeout:.0f}s")
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"], capture_output=True)
        time.sleep(0.3)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def import_torch() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    python = shlex.quote(sys.executable)
    bare_file = Path("/tmp") / f"bare_textual_{os.getpid()}.py"
    bare_file.write_text(BARE_APP)
    wizard, bare, torch_import = [], [], []
    first_paint(f"{python} -m lora_tui", "Which model do you want to adapt?")  # warm the file cache
    for _ in range(args.rounds):
        wizard.append(first_paint(f"{python} -m lora_tui", "Which model do you want to adapt?"))
        bare.append(first_paint(f"{python} {bare_file}", "bare textual app ready"))
        torch_import.append(import_torch())
    bare_file.unlink(missing_ok=True)
    w, b, t = statistics.median(wizard), statistics.median(bare), statistics.median(torch_import)
    print(f"rounds: {args.rounds} (median; tmux pane polled every 10 ms)")
    print(f"wizard first screen      {w:6.3f} s   (all: {', '.join(f'{x:.3f}' for x in wizard)})")
    print(f"bare Textual app         {b:6.3f} s   -> wizard / bare = {w / b:.2f}x")
    print(f"python -c 'import torch' {t:6.3f} s   -> the wizard paints {t / w:.1f}x faster than torch imports")


if __name__ == "__main__":
    main()
