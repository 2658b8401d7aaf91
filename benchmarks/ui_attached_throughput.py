"""Does watching a run in the wizard slow the trainer down?

The same run (embedded SmolLM2-135M-Instruct, sample data, LoRA r 16 on all linear
layers, micro-batch 4, max length 256, N steps) is trained twice per round: once
headless (no client at all), once with the wizard attached in a real terminal
(tmux, `python3 -m lora_tui --run DIR`, the training screen following events.jsonl).
The order alternates between rounds. Reported: the trainer's non-padding tokens/s
between its first and last optimiser step (loading left out) and the ratio attached /
headless; the trainer's CPU seconds per 1000 tokens; and the CPU the wizard process
itself used while attached, with the cost of one poll of the run directory. On a
machine shared with other jobs, their load moves both trainer figures far more than
the wizard can: read them next to the load average printed for each run, and trust
the wizard's own CPU share most.

    python3 benchmarks/ui_attached_throughput.py [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
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


def follow_trainer(run, timeout: float = 1800) -> tuple[str, float | None]:
    """Wait for the run to end; meanwhile sample the trainer's CPU time against tokens_seen, so
    CPU seconds per 1000 tokens can be compared even when other programs share the machine."""
    import psutil

    deadline = time.monotonic() + timeout
    offset, tokens, first, last, proc = 0, None, None, None, None
    while time.monotonic() < deadline:
        events, offset = run.read_events_from(offset)
        steps = [e for e in events if e["type"] == "step"]
        if steps:
            tokens = steps[-1]["tokens_seen"]
        state = run.state()
        if state in ("finished", "failed", "stopped", "dead"):
            break
        try:
            proc = proc or psutil.Process(run.read_status()["pid"])
            cpu = sum(proc.cpu_times()[:2])
            if tokens is not None:
                first = first or (cpu, tokens)
                last = (cpu, tokens)
        except (psutil.Error, KeyError):
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{run.path} did not finish in {timeout:.0f}s")
    per_1k = None
    if first and last and last[1] > first[1]:
        per_1k = 1000 * (last[0] - first[0]) / (last[1] - first[1])
    return state, per_1k


def one_run(path: Path, steps: int, attached: bool) -> tuple[float, float | None, float | None]:
    """(trainer tokens/s, trainer CPU s per 1000 tokens, wizard CPU % of one core or None)."""
    import psutil

    from lora_tui.core.run.launcher import start_run

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
        state, per_1k = follow_trainer(run)
        cpu_share = None
        if wizard is not None:
            cpu_share = 100 * (sum(wizard.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    finally:
        if attached:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    if state != "finished":
        raise SystemExit(f"{path} ended {state}; see {run.log_path}")
    return tokens_per_s(run), per_1k, cpu_share


def poll_cost(run, polls: int = 2000) -> float:
    """Seconds of CPU per poll of the training screen's follower (the same calls, nothing new to read)."""
    _, offset = run.read_events_from(0)
    started = time.process_time()
    for _ in range(polls):
        run.read_events_from(offset)
        run.state()
        run.log_path.stat()
    return (time.process_time() - started) / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    headless, attached, wizard_cpu = [], [], []
    cpu_headless, cpu_attached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for with_wizard in order:
                name = f"{'attached' if with_wizard else 'headless'}-{round_}"
                speed, per_1k, cpu = one_run(Path(tmp) / name, args.steps, with_wizard)
                (attached if with_wizard else headless).append(speed)
                if per_1k is not None:
                    (cpu_attached if with_wizard else cpu_headless).append(per_1k)
                if cpu is not None:
                    wizard_cpu.append(cpu)
                load = os.getloadavg()[0]
                print(f"{name:12} {speed:8.1f} tokens/s   trainer CPU "
                      f"{per_1k if per_1k is not None else float('nan'):5.2f} s/1k tokens   load average {load:4.1f}"
                      + (f"   wizard CPU {cpu:.1f}% of one core" if cpu is not None else ""), flush=True)
        from lora_tui.core.run.runs import RunDirectory

        per_poll = poll_cost(RunDirectory(Path(tmp) / "headless-0"))
    h, a = statistics.median(headless), statistics.median(attached)
    print(f"\nheadless (median)        {h:8.1f} tokens/s")
    print(f"wizard attached (median) {a:8.1f} tokens/s   ratio attached / headless = {a / h:.3f}")
    if cpu_headless and cpu_attached:
        ch, ca = statistics.median(cpu_headless), statistics.median(cpu_attached)
        print(f"trainer CPU per 1000 tokens: headless {ch:.2f} s, attached {ca:.2f} s, ratio {ca / ch:.3f}")
    print(f"wizard process CPU while attached: {statistics.median(wizard_cpu):.1f}% of one core (median)")
    print(f"one poll of events.jsonl + state + log: {per_poll * 1e6:.0f} µs of CPU; at 2 polls/s that is "
          f"{per_poll * 2 * 100:.3f}% of one core")
    print("(on a shared machine, other processes move tokens/s far more than the wizard: see load average)")


if __name__ == "__main__":
    main()
