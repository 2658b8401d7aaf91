"""Throughput and peak memory of `lora-tui train` (its defaults) against plain TRL SFTTrainer scripts.

One run of this script, same machine, same data, same LoRA (r 16 / alpha 32 / dropout 0.05,
all linear layers), micro-batch, max length and learning rate:

  ours         `lora-tui train` with its defaults (the trainer process it spawns, as a direct child), except
               the micro-batch: set to (a)'s so the arms compare like with like (`micro_batch=auto` is
               measured by benchmarks/micro_batch_sweep.py)
  trl          (a) a plain TRL script with TRL's own defaults (bf16 autocast, checkpointing, ...)
  trl_packing  (b) the same with TRL's bfd packing (padding-free rows)
  trl_fp32     (optional) plain TRL with our old settings: fp32, no checkpointing

Data: --data long (default): a long-tailed chat set (benchmarks/make_long_tailed_data.py, token
lengths ~50 to >1,000), or --data sample (sample_data/train.jsonl, short uniform rows).
Tokens/s counts non-padding input tokens between the first and the last optimiser step (model
loading and evaluation left out). Peak memory: CPU, the child's ru_maxrss; CUDA,
torch.cuda.max_memory_reserved. Goals on the long-tailed data: peak <= 0.6x (a), tokens/s >=
1.3x the faster of (a) and (b); on the sample data never slower than (a).

    python benchmarks/train_vs_trl.py [--data long|sample] [--steps 6] [--arms ours,trl,trl_packing]
    python benchmarks/train_vs_trl.py --device cuda --model Qwen/Qwen2.5-1.5B-Instruct   # bf16, QLoRA 4-bit, Liger on/off
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
GIB = 2**30


def measured(cmd: list[str]) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    rss_kb = int(next(l for l in result.stdout.splitlines() if l.startswith("MAXRSS_KB")).split()[1])
    return result.stdout, rss_kb * 1024


def ours(model: str, data: Path, args, tmp: Path, name: str, extra: list[str]) -> dict:
    from lora_tui.core.config import Config, apply_overrides, save_config
    from lora_tui.core.runs import RunDirectory

    overrides = [f"model.name={model}", f"data.train={data}", "data.validation=", "data.val_fraction=0",
                 f"data.max_seq_len={args.max_len}", "lora.r=16", "lora.alpha=32", "lora.dropout=0.05",
                 "lora.targets=all-linear", f"training.max_steps={args.steps}", f"training.micro_batch={args.batch}",
                 "training.grad_accum=1", "training.learning_rate=1e-4", "training.save_steps=0", "training.eval_steps=0"]
    if args.device == "cuda":
        overrides += ["model.load_in=4bit"]
    config = apply_overrides(Config(), overrides + extra)
    run = RunDirectory(tmp / name)
    run.path.mkdir()
    save_config(config, run.config_path)
    # The same trainer `lora-tui train` spawns, run as a direct child so its peak RSS can be read.
    _, rss = measured([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)])
    events = run.read_events()
    if events and events[-1]["type"] == "failed":
        raise RuntimeError(f"{name} failed: {events[-1].get('reason')}")
    steps = [e for e in events if e["type"] == "step"]
    started = next(e for e in events if e["type"] == "started")
    memory = next((e for e in reversed(events) if e["type"] == "memory"), {})
    first, last = steps[0], steps[-1]
    tokens, seconds = last["tokens_seen"] - first["tokens_seen"], last["elapsed_s"] - first["elapsed_s"]
    peak = memory.get("memory_peak_bytes") if args.device == "cuda" else rss
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak": peak,
            "estimate": memory.get("memory_estimate_bytes"), "estimate_error_pct": memory.get("memory_error_pct"),
            "engine": {k: started.get(k) for k in ("batching", "attention", "kernels", "gradient_checkpointing", "precision")}}


def plain(model: str, data: Path, args, tmp: Path, mode: str) -> dict:
    steps = args.steps if "packing" not in mode else max(2, args.steps // 2)  # a packed step holds ~4x the tokens
    out, rss = measured([sys.executable, str(REPO / "benchmarks" / "_plain_trl.py"), model, str(data),
                         str(steps), str(args.batch), str(args.max_len), str(tmp / mode), mode])
    figures = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    return {**figures, "peak": figures.get("max_reserved") if args.device == "cuda" else rss}


ARMS_CPU = {"ours": "lora-tui train (defaults)", "trl": "(a) TRL, its defaults", "trl_packing": "(b) TRL + packing",
            "trl_fp32": "TRL fp32, no checkpointing"}
ARMS_CUDA = {"ours": "lora-tui (4-bit, Liger auto)", "ours_noliger": "lora-tui (4-bit, kernels=none)",
             "ours_padfree": "lora-tui (4-bit, padding_free)", "trl": "(a) TRL defaults, 4-bit",
             "trl_packing": "(b) TRL + packing, 4-bit"}


def run_arm(arm: str, model: str, data: Path, args, tmp: Path) -> dict:
    mode_4bit = "+4bit" if args.device == "cuda" else ""
    if arm == "ours":
        return ours(model, data, args, tmp, arm, args.set)
    if arm == "ours_noliger":
        return ours(model, data, args, tmp, arm, args.set + ["training.kernels=none"])
    if arm == "ours_padfree":
        return ours(model, data, args, tmp, arm, args.set + ["training.batching=padding_free"])
    mode = {"trl": "defaults", "trl_packing": "packing", "trl_fp32": "fp32"}[arm]
    return plain(model, data, args, tmp, mode + mode_4bit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="long", help="long | sample | a JSONL path")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="", help="CUDA: a 1-3B model (hub id or directory); CPU: the embedded model")
    parser.add_argument("--arms", default="", help="comma list; default: every arm of the device")
    parser.add_argument("--set", action="append", default=[], help="extra section.key=value for our arms")
    parser.add_argument("--json", default="", help="also write the figures here")
    args = parser.parse_args()
    from lora_tui.core.embedded import ensure_embedded_model

    model = args.model or str(ensure_embedded_model())
    if args.data == "long":
        data = Path(tempfile.gettempdir()) / "lora_tui_bench" / "long_tailed.jsonl"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_long_tailed_data.py"), str(data)], check=True)
    else:
        data = REPO / "sample_data" / "train.jsonl" if args.data == "sample" else Path(args.data)
    names = ARMS_CUDA if args.device == "cuda" else ARMS_CPU
    arms = [a for a in (args.arms.split(",") if args.arms else [a for a in names if a != "trl_fp32"]) if a]
    print(f"load before: {os.getloadavg()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in arms:
            try:
                results[arm] = run_arm(arm, model, data, args, Path(tmp))
            except Exception as exc:  # one arm failing must not lose the others' figures
                results[arm] = {"error": str(exc)[-1500:]}
            shown = results[arm]["error"][-400:] if "error" in results[arm] else json.dumps(results[arm])[:400]
            print(f"  {arm}: {shown}", flush=True)
    print(f"load after: {os.getloadavg()}")
    print(f"\n{'':32}{'tokens/s':>10}{'tokens':>8}{'seconds':>9}{'peak':>12}")
    for arm in arms:
        r = results[arm]
        if "error" in r:
            print(f"{names[arm]:32} failed: {r['error'].splitlines()[-1][:80]}")
            continue
        print(f"{names[arm]:32}{r['tokens_per_s']:>10.1f}{r['tokens']:>8}{r['seconds']:>9.1f}{r['peak'] / GIB:>8.2f} GiB")
    good = {a: r for a, r in results.items() if "error" not in r}
    if "ours" in good and "trl" in good:
        mine, base = good["ours"], good["trl"]
        fastest = max((good[a]["tokens_per_s"] for a in ("trl", "trl_packing") if a in good))
        print(f"\nours / (a): peak memory x{mine['peak'] / base['peak']:.2f} (goal <= 0.60), "
              f"tokens/s x{mine['tokens_per_s'] / base['tokens_per_s']:.2f}")
        print(f"ours / faster of (a),(b): tokens/s x{mine['tokens_per_s'] / fastest:.2f} (goal >= 1.30 on long-tailed data)")
        if mine.get("estimate"):
            print(f"ours: estimated {mine['estimate'] / GIB:.2f} GiB, measured {mine['peak'] / GIB:.2f} GiB, "
                  f"error {mine['estimate_error_pct']:+.1f}%; engine {mine['engine']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
