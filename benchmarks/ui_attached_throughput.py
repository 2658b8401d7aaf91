"""Does watching a run in the wizard slow the trainer down?

The same run (embedded SmolLM2-135M-Instruct, sample data, LoRA r 16 on all linear
layers, micro-batch 4, max length 256, N steps) is trained twice per round: once
headless (no client at all), once with the wizard attached in a real terminal
(tmux, `python3 -m lora_tui --run DIR`, the training screen following events.jsonl).
The order alternates between rounds. Reported: the trainer's non-padding tokens/s
between its first and last optimiser step (loading left out), the ratio attached /
headless, and the CPU the wizard process itself used while attached.

    python3 benchmarks/ui_attached_throughput.py [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def config_for(steps: int):
    from lora_tui.core.config import Config, apply_overrides

    return apply_overrides(Config(), [
        f"data.train={REPO / 'sample_data' / 'train.jsonl'}", "data.validation=", "data.val_fraction=0",
        "data.max_seq_len=256", "lora.r=16", "lora.alpha=32", "lora.targets=all-linear",
        f"training.max_steps={steps}", "training.micro_batch=4", "training.grad_accum=1",
        "training.save_steps=0", "training.eval_steps=0"])


def tokens_per_s(run) -> float:
    steps = [e for e in run.read_events() if e["type"] == "step"]
    first, last = steps[0], steps[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])


def wait_done(run, timeout: float = 1800) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run.state()
        if state in ("finished", "failed", "stopped", "dead"):
            return state
        time.sleep(0.5)
    raise RuntimeError(f"{run.path} did not finish in {timeout:.0f}s")


def one_run(path: Path, steps: int, attached: bool) -> tuple[float, float | None]:
    """(trainer tokens/s, wizard CPU % of one core or None)."""
    import psutil

    from lora_tui.core.launcher import start_run

    run = start_run(config_for(steps), run_dir=path)
    session, wizard, cpu0, t0 = f"attached-{path.name}", None, None, None
    if attached:
        command = f"cd {shlex.quote(str(REPO))} && exec {shlex.quote(sys.executable)} -m lora_tui --run {path}"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
        pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                 capture_output=True, text=True, check=True).stdout.split()[0])
        wizard = psutil.Process(pid)
        time.sleep(2.0)  # let the wizard paint and read the history before counting its CPU
        cpu0, t0 = sum(wizard.cpu_times()[:2]), time.monotonic()
    try:
        state = wait_done(run)
        cpu_share = None
        if wizard is not None:
            cpu_share = 100 * (sum(wizard.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    finally:
        if attached:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    if state != "finished":
        raise SystemExit(f"{path} ended {state}; see {run.log_path}")
    return tokens_per_s(run), cpu_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    headless, attached, wizard_cpu = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for with_wizard in order:
                name = f"{'attached' if with_wizard else 'headless'}-{round_}"
                speed, cpu = one_run(Path(tmp) / name, args.steps, with_wizard)
                (attached if with_wizard else headless).append(speed)
                if cpu is not None:
                    wizard_cpu.append(cpu)
                print(f"{name:12} {speed:8.1f} tokens/s" + (f"   wizard CPU {cpu:.1f}% of one core" if cpu else ""),
                      flush=True)
    h, a = statistics.median(headless), statistics.median(attached)
    print(f"\nheadless (median)        {h:8.1f} tokens/s")
    print(f"wizard attached (median) {a:8.1f} tokens/s   ratio attached / headless = {a / h:.3f}")
    print(f"wizard process CPU while attached: {statistics.median(wizard_cpu):.1f}% of one core (median)")


if __name__ == "__main__":
    main()
