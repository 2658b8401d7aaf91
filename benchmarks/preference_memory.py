"""Estimated against measured peak memory of dpo / kto training steps (issue 28 item 3), on the CPU.

Each point is a real run of lora-tui's trainer (``python -m lora_tui.core.trainer_main``, a fresh process)
on the embedded model and sample_data/preference.jsonl, 3 optimiser steps, no evaluation or checkpoint; the
trainer itself records its estimate (core/plan/memory.py, counted before step 1) and its peak RSS
(VmHWM, core/plan/memory_record.peak_rss) in its ``memory`` event, as benchmarks/memory_accuracy.py compares them for SFT. Prints a
table and whether the goal holds: within +10 % of measured (or 0.5 GiB, whichever is larger) and never more
than 5 % under.

    flock /tmp/lora_tui_heavy.lock python benchmarks/preference_memory.py            # the matrix below
    flock /tmp/lora_tui_heavy.lock python benchmarks/preference_memory.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lora_tui.core.units import GiB  # noqa: E402

# (method, micro-batch, gradient checkpointing, load_in, extra overrides)
MATRIX = [("dpo", 1, False, "16bit"), ("dpo", 4, False, "16bit"), ("dpo", 8, False, "16bit"), ("dpo", 8, True, "16bit"),
          ("dpo", 4, False, "4bit"), ("kto", 4, False, "16bit"), ("kto", 8, True, "16bit")]


def point(method: str, micro: int, checkpointing: bool, load_in: str, work: Path) -> dict:
    from lora_tui.core.config import Config, apply_overrides, save_config
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(work / f"{method}-{micro}-{int(checkpointing)}-{load_in}")
    run.path.mkdir(parents=True)
    config = apply_overrides(Config(), [
        f"data.train={REPO / 'sample_data/preference.jsonl'}", "data.validation=", "data.val_fraction=0",
        f"training.method={method}", f"training.micro_batch={micro}", "training.grad_accum=1",
        f"training.gradient_checkpointing={str(checkpointing).lower()}", f"model.load_in={load_in}",
        "training.max_steps=3", "training.save_steps=0", "training.eval_steps=0"])
    save_config(config, run.config_path)
    subprocess.run([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)], capture_output=True, timeout=5400)
    events = run.read_events()
    memory = next((e for e in reversed(events) if e["type"] == "memory"), {})
    started = next((e for e in events if e["type"] == "started"), {})
    failed = next((e for e in events if e["type"] == "failed"), None)
    estimate, peak = memory.get("memory_estimate_bytes"), memory.get("memory_peak_bytes")
    return {"method": method, "micro_batch": micro, "checkpointing": checkpointing, "load_in": load_in,
            "precision": started.get("precision"), "seq_len": (started.get("memory_estimate") or {}).get("seq_len"),
            "estimate": estimate, "peak": peak, "breakdown": memory.get("breakdown"),
            "error_pct": memory.get("memory_error_pct"), "failed": failed and failed.get("reason")}


def within_goal(estimate: int, peak: int) -> bool:
    over = estimate - peak
    return -0.05 * peak <= over <= max(0.10 * peak, 0.5 * GiB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the points here (rewritten after each point)")
    parser.add_argument("--only", default=None, help="comma list of matrix indices to run (default: all)")
    args = parser.parse_args()
    chosen = [MATRIX[int(i)] for i in args.only.split(",")] if args.only else MATRIX
    rows = []
    with tempfile.TemporaryDirectory(prefix="pref-memory-") as tmp:
        for spec in chosen:
            result = point(*spec, Path(tmp))
            rows.append(result)
            ok = result["estimate"] and result["peak"] and within_goal(result["estimate"], result["peak"])
            print(f"{result['method']} micro {result['micro_batch']} ckpt {str(result['checkpointing']):5} "
                  f"{result['load_in']:5} {result['precision']}: estimate "
                  f"{(result['estimate'] or 0) / GiB:.2f} GiB, measured {(result['peak'] or 0) / GiB:.2f} GiB "
                  f"({result['error_pct']:+}%) {'ok' if ok else 'OUTSIDE THE GOAL'}"
                  + (f" FAILED: {result['failed']}" if result["failed"] else ""), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2))
    good = [r for r in rows if r["estimate"] and r["peak"]]
    held = sum(within_goal(r["estimate"], r["peak"]) for r in good)
    print(f"{held} of {len(good)} points within the goal (-5 % .. +10 % or 0.5 GiB)")
    return 0 if held == len(good) and good else 1


if __name__ == "__main__":
    sys.exit(main())
