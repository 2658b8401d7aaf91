"""Training throughput on 1, 2, ... devices through `lora-tui train` itself (the trainer process
starting its ranks with `accelerate launch`), and the scaling efficiency against one device.

CPU (default): 1 and 2 processes (gloo). Each process gets cores/processes threads, so on a
small machine the processes share the same cores and the efficiency shows the cost of the
extra process and the all-reduce more than any gain; it needs real cores (or GPUs) per rank.
GPU: 1..N GPUs (training.devices=k), DDP unless --strategy says otherwise.

Tokens/s: non-padding input tokens of all ranks between the first and last logged optimiser
step (transformers sums every rank's count), i.e. after model loading and the first step.
The per-device micro-batch stays fixed, so k devices train k times the rows per step.

    python benchmarks/multi_device.py                         # CPU, embedded model, 1 and 2 processes
    python benchmarks/multi_device.py --devices 1,2,4,8 --model Qwen/Qwen2.5-1.5B-Instruct   # GPUs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def one_run(devices: int, args, out: Path) -> dict:
    from lora_tui.core.config import Config, apply_overrides
    from lora_tui.core.run.launcher import start_run

    config = apply_overrides(Config(), [
        f"model.name={args.model}", f"data.train={args.data}", "data.validation=", "data.val_fraction=0",
        f"data.max_seq_len={args.seq_len}", f"training.micro_batch={args.batch}", "training.grad_accum=1",
        f"training.max_steps={args.steps}", "training.eval_steps=0", "training.save_steps=0",
        f"training.devices={devices}", f"training.strategy={args.strategy}", "lora.r=16"])
    begun = time.monotonic()
    run = start_run(config, out / f"devices-{devices}")
    while run.state() not in ("finished", "failed", "stopped", "dead") or run.is_locked():
        time.sleep(0.5)
    wall = time.monotonic() - begun
    events = run.read_events()
    steps = [e for e in events if e["type"] == "step"]
    started = next((e for e in events if e["type"] == "started"), {})
    if run.state() != "finished" or len(steps) < 2:
        raise SystemExit(f"{devices} device(s): run ended '{run.state()}'; see {run.log_path}")
    first, last = steps[0], steps[-1]
    tokens = last["tokens_seen"] - first["tokens_seen"]
    seconds = last["time"] - first["time"]
    return {"devices": devices, "world_size": started.get("world_size"), "strategy": started.get("strategy"),
            "tokens_per_s": tokens / seconds, "tokens_per_step": tokens / (len(steps) - 1), "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2", help="comma list of device counts (default 1,2)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data", default=str(REPO / "sample_data" / "train.jsonl"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="micro-batch per device")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every process (default: the trainer's own choice: all cores for one "
                             "process, cores/ranks for each of several)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    counts = [int(x) for x in args.devices.split(",")]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; model {args.model}, "
          f"micro-batch {args.batch}/device, {args.steps} steps, max length {args.seq_len}, "
          f"threads/process {args.threads or 'default'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="multi-device-") as tmp:
        for n in counts:
            result = one_run(n, args, Path(tmp))
            results.append(result)
            print(f"{n} device(s): world {result['world_size']} {result['strategy']:<6} "
                  f"{result['tokens_per_s']:8.1f} tokens/s  ({result['tokens_per_step']:.0f} tokens/step, "
                  f"wall {result['wall_s']:.0f} s incl. start-up)", flush=True)
    base = results[0]
    for r in results[1:]:
        speedup = r["tokens_per_s"] / base["tokens_per_s"]
        ideal = r["devices"] / base["devices"]
        print(f"scaling {base['devices']} -> {r['devices']}: {speedup:.2f}x tokens/s, efficiency {speedup / ideal:.0%}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
