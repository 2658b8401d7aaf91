"""The whole wizard by keyboard, in a real terminal, on the embedded model and the sample data.

tmux runs `python3 -m lora_tui` (the README's command) in a 100x30 pane; this script
sends only keys, exactly what a person would press, and reads the pane:

    Enter (embedded model) -> ctrl+n (hardware) -> ctrl+n (dataset, validated)
    -> Tab to the learning rate, max_steps, micro-batch and gradient accumulation fields,
       type values -> ctrl+n (start training)
    -> wait for "Finished" -> ctrl+n (chat) -> type a prompt, Enter -> the adapter's reply

It prints how long each stage took and the final chat pane.

    python3 benchmarks/ui_walkthrough.py [--steps 8] [--lr 1e-4] [--micro-batch 4]
    python3 benchmarks/ui_walkthrough.py --steps 24 --lr 1e-3 --micro-batch 8   # the taught behaviour shows
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SESSION = f"walkthrough-{os.getpid()}"


def pane() -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout


def keys(*names: str) -> None:
    for name in names:
        subprocess.run(["tmux", "send-keys", "-t", SESSION, name], check=True)
        time.sleep(0.15)


def type_text(text: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", SESSION, "-l", text], check=True)
    time.sleep(0.2)


def wait_for(text: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if text in pane():
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"{text!r} did not appear in {timeout:.0f}s. Pane:\n{pane()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", default="1e-4", help="learning rate to type in (1e-3 teaches the sample task fast)")
    parser.add_argument("--micro-batch", default="4")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="walkthrough-")  # the run lands in its runs/; sample data still resolves
    command = (f"cd {shlex.quote(workdir)} && PYTHONPATH={shlex.quote(str(REPO))} "
               f"{shlex.quote(sys.executable)} -m lora_tui; sleep 600")
    started = time.monotonic()
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "100", "-y", "30", command], check=True)
    try:
        print(f"first screen          {wait_for('Which model do you want to adapt?', 60):6.1f} s", flush=True)
        wait_for("embedded: SmolLM2-135M-Instruct", 30)
        keys("Enter")  # choose the embedded model and move on
        wait_for("Hardware", 10)
        time.sleep(1.0)
        keys("C-n")
        print(f"dataset validated     {wait_for('Ready to train', 120):6.1f} s", flush=True)
        keys("C-n")
        wait_for("Start training", 10)
        time.sleep(1.0)
        # Focus starts on the preset; the form order is r, alpha, dropout, targets, use_rslora,
        # use_dora, learning_rate, epochs, max_steps, micro_batch, grad_accum.
        def field(tabs: int, value: str) -> None:
            keys(*["Tab"] * tabs, "End", *["BSpace"] * 8)
            type_text(value)

        field(7, args.lr)  # learning_rate
        field(2, str(args.steps))  # max_steps
        field(1, args.micro_batch)  # micro_batch
        field(1, "1")  # grad_accum
        time.sleep(0.5)
        assert f"training.max_steps={args.steps}" in pane().replace("\n", ""), pane()
        keys("C-n")
        wait_for("running", 120)
        print(f"training finished     {wait_for('Finished', 3600):6.1f} s", flush=True)
        keys("C-n")
        print(f"chat model loaded     {wait_for('Chatting with', 300):6.1f} s", flush=True)
        type_text("How do I read a map scale?")
        keys("Enter")
        t0 = time.monotonic()
        wait_for("Adapter  ", 60)
        previous, stable = "", 0
        while stable < 10 and time.monotonic() - t0 < 300:  # reply done: the pane stops changing
            time.sleep(0.5)
            current = pane()
            stable = stable + 1 if current == previous else 0
            previous = current
        print(f"reply streamed        {time.monotonic() - t0:6.1f} s", flush=True)
        print(f"whole walkthrough     {time.monotonic() - started:6.1f} s\n")
        print(pane())
        keys("C-q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


if __name__ == "__main__":
    main()
