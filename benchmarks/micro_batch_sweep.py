"""Micro-batch sweep of `lora-tui train` with its defaults: does a larger micro-batch train faster?

For each micro-batch M in --micro-batches the real trainer (`python -m lora_tui.core.trainer_main`,
the process `lora-tui train` spawns, run as a direct child so its peak RSS can be read) trains the
same model, data, LoRA (r 16 / alpha 32 / dropout 0.05, all linear layers), max length and number
of optimiser steps, with the effective batch kept at --effective-batch (grad_accum = E / M).
Everything else is lora-tui's default (precision auto, batching auto, checkpointing auto, ...);
the engine each arm chose is printed with it, because checkpointing auto follows the micro-batch.
"auto" in the list runs `training.micro_batch=auto` (where the config accepts it) and prints what
it chose.

Prints non-padding tokens/s (between the first and last optimiser step: loading and the first
step's warm-up left out), seconds per step and peak RSS per arm, and each arm's speed against the
smallest micro-batch. It measures; it asserts nothing.

    python benchmarks/micro_batch_sweep.py [--data long|sample|PATH] [--micro-batches 2,4,8,16]
        [--effective-batch 16] [--steps 5] [--max-len 512] [--set section.key=value] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # run from a checkout
from train_vs_trl import GIB, REPO, ours  # noqa: E402  (same trainer arm, same measuring)
from lora_tui.core.plan.workload import AUTO_BASE  # noqa: E402


def arm(model: str, data: Path, args, tmp: Path, micro: str) -> dict:
    from lora_tui.core.run.runs import RunDirectory

    # auto keeps an effective batch of AUTO_BASE x grad_accum rows (lora_tui.core.plan.workload)
    accum = str(max(1, args.effective_batch // (AUTO_BASE if micro == "auto" else int(micro))))
    extra = [f"training.micro_batch={micro}", f"training.grad_accum={accum}"] + args.set
    bench_args = argparse.Namespace(max_len=args.max_len, steps=args.steps, batch=micro, device="cpu", set=[])
    result = ours(model, data, bench_args, tmp, f"mb{micro}", extra)
    started = next(e for e in RunDirectory(tmp / f"mb{micro}").read_events() if e["type"] == "started")
    # What the run resolved (micro_batch auto, checkpointing auto) and why.
    reasons = started.get("engine_reasons") or {}
    result["chosen"] = {"micro_batch": started.get("micro_batch"), "grad_accum": started.get("grad_accum"),
                        "why": reasons.get("micro_batch") if micro == "auto" else None,
                        "checkpointing_why": reasons.get("gradient_checkpointing")}
    result["steps"] = args.steps
    result["seconds_per_step"] = result["seconds"] / max(1, args.steps - 1)
    result["micro_batch"], result["grad_accum"] = started.get("micro_batch") or micro, started.get("grad_accum") or accum
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="long", help="long | sample | a JSONL path")
    parser.add_argument("--micro-batches", default="2,4,8,16", help="comma list; 'auto' runs training.micro_batch=auto")
    parser.add_argument("--effective-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--set", action="append", default=[], help="extra section.key=value for every arm")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args()
    from lora_tui.core.model.embedded import ensure_embedded_model

    model = str(ensure_embedded_model())
    if args.data == "long":
        data = Path(tempfile.gettempdir()) / "lora_tui_bench" / "long_tailed.jsonl"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_long_tailed_data.py"), str(data)], check=True)
    else:
        data = REPO / "sample_data" / "train.jsonl" if args.data == "sample" else Path(args.data)
    micros = [m.strip() for m in args.micro_batches.split(",") if m.strip()]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for micro in micros:
            load = os.getloadavg()[0]
            try:
                results[micro] = arm(model, data, args, Path(tmp), micro)
            except Exception as exc:  # one arm failing must not lose the others' figures
                results[micro] = {"error": str(exc)[-1500:]}
            results[micro]["load_before"], results[micro]["load_after"] = load, os.getloadavg()[0]
            print(f"  micro_batch {micro}: {json.dumps(results[micro])[:500]}", flush=True)
    print(f"\ndata {data.name}, effective batch {args.effective_batch}, {args.steps} steps, max length {args.max_len}")
    print(f"{'micro x accum':>14}{'tokens/s':>10}{'s/step':>8}{'tokens':>8}{'peak RSS':>11}{'vs first':>9}"
          f"{'ckpt':>6}  {'load':>9}  chosen")
    base = next((r["tokens_per_s"] for r in results.values() if "error" not in r), None)
    for micro, r in results.items():
        if "error" in r:
            print(f"{micro:>14}  failed: {r['error'].splitlines()[-1][:80]}")
            continue
        ckpt = "on" if r["engine"].get("gradient_checkpointing") else "off"
        print(f"{str(r['micro_batch']) + ' x ' + str(r['grad_accum']):>14}{r['tokens_per_s']:>10.1f}{r['seconds_per_step']:>8.1f}"
              f"{r['tokens']:>8}{r['peak'] / GIB:>7.2f} GiB{r['tokens_per_s'] / base:>8.2f}x{ckpt:>6}"
              f"  {r['load_before']:.1f}->{r['load_after']:.1f}  {r['chosen']['why'] if micro == 'auto' else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
