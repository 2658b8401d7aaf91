"""Throughput, peak memory and MFU of `lora-tui train` (its defaults) against plain TRL SFTTrainer scripts.

The arms are run by lora_tui.core.bench.runner (the code `lora-tui bench` runs; the TRL script is
lora_tui/core/bench/plain_trl.py), each in its own process. Same machine, data, LoRA (r 16 / alpha 32 /
dropout 0.05, all linear layers), micro-batch, max length and learning rate in every arm:

  ours          `lora-tui train` with its defaults except the micro-batch, pinned to TRL's so the arms
                compare like with like (`micro_batch=auto` is measured by benchmarks/micro_batch_sweep.py)
  ours_noliger  (CUDA) the same with training.kernels=none
  ours_padfree  (CUDA) the same with training.batching=padding_free
  trl           (a) a plain TRL script with TRL's own defaults (bf16 autocast, checkpointing, ...)
  trl_packing   (b) the same with TRL's bfd packing (padding-free rows; half the steps, each holds more)
  trl_fp32      (optional, CPU) plain TRL with our old settings: fp32, no checkpointing

--quant 4bit (CUDA default): QLoRA, the base in NF4; --quant none: 16-bit LoRA (bf16 base on a GPU).
Data: --data long (default): a long-tailed chat set (benchmarks/make_long_tailed_data.py, token
lengths ~50 to >1,000), --data sample (sample_data/train.jsonl), or a JSONL path.
Tokens/s: non-padding input tokens between the first and the last optimiser step (loading left out).
Peak: CPU, the child's max RSS; CUDA, torch.cuda.max_memory_reserved. MFU (CUDA): tokens/s x 4N
FLOPs per trained token / --peak-tflops (default 790, the H200's measured dense bf16), N the
weights a token multiplies (linear layers + LM head; see lora_tui/core/bench/runner.py). Goals on the
long-tailed data: peak <= 0.6x (a), tokens/s >= 1.3x the faster of (a) and (b); MFU at defaults on
the 7B shape >= 30 % (16-bit LoRA), >= 20 % (QLoRA).

    python benchmarks/train_vs_trl.py [--data long|sample] [--steps 6] [--arms ours,trl,trl_packing]
    python benchmarks/train_vs_trl.py --device cuda --model DIR [--quant none] [--max-len 2048] [--json out.json]
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
sys.path.insert(0, str(REPO))
GIB = 2**30

ARMS_CPU = {"ours": "lora-tui train (defaults)", "trl": "(a) TRL, its defaults", "trl_packing": "(b) TRL + packing",
            "trl_fp32": "TRL fp32, no checkpointing"}
ARMS_CUDA = {"ours": "lora-tui (defaults)", "ours_noliger": "lora-tui (kernels=none)",
             "ours_padfree": "lora-tui (padding_free)", "trl": "(a) TRL defaults", "trl_packing": "(b) TRL + packing"}
OURS_EXTRA = {"ours": [], "ours_noliger": ["training.kernels=none"], "ours_padfree": ["training.batching=padding_free"]}
TRL_MODES = {"trl": "defaults", "trl_packing": "packing", "trl_fp32": "fp32"}


def base_config(model: str, data: Path, args):
    """The config every arm shares; our arms run it through lora-tui's trainer with the engine's defaults."""
    from lora_tui.core.bench.runner import bench_config
    from lora_tui.core.config import Config, apply_overrides

    overrides = [f"model.name={model}", f"data.train={data}", f"data.max_seq_len={args.max_len}", "lora.r=16",
                 "lora.alpha=32", "lora.dropout=0.05", "lora.targets=all-linear", "training.learning_rate=1e-4",
                 f"model.load_in={'4bit' if args.quant == '4bit' else '16bit'}"]
    return bench_config(apply_overrides(Config(), overrides), args.steps, args.batch or None)


def run_arm(arm: str, config, data: Path, args, work: Path, env: dict):
    from lora_tui.core.bench.runner import run_ours, run_plain
    from lora_tui.core.config import apply_overrides

    if arm in OURS_EXTRA:
        return run_ours(apply_overrides(config.copy(), OURS_EXTRA[arm] + args.set), work, env, args.timeout, name=arm)
    return run_plain(arm, config, data, args.steps, args.batch or None, work, env, args.timeout, mode=TRL_MODES[arm])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="long", help="long | sample | a JSONL path")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch of every arm; 0: each arm's own default "
                        "(lora-tui's auto, TRL's 8)")
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quant", default=None, choices=("none", "4bit"),
                        help="4bit: QLoRA (CUDA default); none: 16-bit LoRA (CPU: always)")
    parser.add_argument("--model", default="", help="CUDA: a 1-8B model (hub id or directory); CPU: the embedded model")
    parser.add_argument("--arms", default="", help="comma list; default: every arm of the device")
    parser.add_argument("--set", action="append", default=[], help="extra section.key=value for our arms")
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="the GPU's dense bf16 TFLOP/s for MFU (default: 790, measured on an H200)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds each arm may run")
    parser.add_argument("--json", default="", help="also write the figures here (rewritten after every arm)")
    args = parser.parse_args()
    args.quant = args.quant or ("4bit" if args.device == "cuda" else "none")
    from lora_tui.core.bench.runner import child_env, flops_per_token, mfu, trl_data
    from lora_tui.core.model.embedded import ensure_embedded_model

    model = args.model or str(ensure_embedded_model())
    if args.data == "long":
        data = Path(tempfile.gettempdir()) / "lora_tui_bench" / "long_tailed.jsonl"
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_long_tailed_data.py"), str(data)], check=True)
    else:
        data = REPO / "sample_data" / "train.jsonl" if args.data == "sample" else Path(args.data)
    names = ARMS_CUDA if args.device == "cuda" else ARMS_CPU
    arms = [a for a in (args.arms.split(",") if args.arms else [a for a in names if a != "trl_fp32"]) if a]
    flops = flops_per_token(model)
    method = "QLoRA 4-bit" if args.quant == "4bit" else "16-bit LoRA"
    batch = args.batch or "each arm's default"
    print(f"{model}: {method}, max length {args.max_len}, micro-batch {batch}, {args.steps} steps; "
          f"4N = {flops / 1e9 if flops else float('nan'):.2f} GFLOP per trained token", flush=True)
    print(f"load before: {os.getloadavg()}", flush=True)
    results: dict = {}
    env = child_env(args.device)

    def save() -> None:
        if args.json:
            out = {"args": vars(args), "flops_per_token": flops, "method": method,
                   "results": {k: (v if isinstance(v, dict) else v.__dict__) for k, v in results.items()}}
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps(out, indent=2, default=str))
            os.replace(tmp, args.json)  # a killed run keeps the arms it finished

    with tempfile.TemporaryDirectory() as tmp:
        config = base_config(model, data, args)
        trl_rows = trl_data(config, Path(tmp) / "trl_data.jsonl")
        for arm in arms:
            result = run_arm(arm, config, trl_rows, args, Path(tmp), env)
            if args.device == "cuda":
                result.mfu = mfu(result.tokens_per_s, flops, args.peak_tflops)
            results[arm] = result
            shown = result.error[-400:] if result.error else \
                f"{result.tokens_per_s:.1f} tokens/s, peak {(result.peak_bytes or 0) / GIB:.2f} GiB"
            print(f"  {arm}: {shown}", flush=True)
            save()
    print(f"load after: {os.getloadavg()}")
    print(f"\n{'':32}{'tokens/s':>10}{'tokens':>8}{'seconds':>9}{'peak':>12}{'MFU':>8}")
    for arm in arms:
        r = results[arm]
        if r.error:
            print(f"{names.get(arm, arm):32} failed: {r.error.strip().splitlines()[-1][:80] if r.error.strip() else ''}")
            continue
        shown_mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "-"
        print(f"{names.get(arm, arm):32}{r.tokens_per_s:>10.1f}{r.tokens:>8}{r.seconds:>9.1f}"
              f"{(r.peak_bytes or 0) / GIB:>8.2f} GiB{shown_mfu:>8}")
    if args.device == "cuda":
        print(f"MFU = tokens/s x 4N ({flops / 1e9 if flops else float('nan'):.2f} GFLOP per trained token) / "
              f"{args.peak_tflops:.0f} TFLOP/s dense bf16")
    good = {a: r for a, r in results.items() if not r.error}
    if "ours" in good and "trl" in good:
        mine, base = good["ours"], good["trl"]
        fastest = max((good[a].tokens_per_s for a in ("trl", "trl_packing") if a in good))
        if mine.peak_bytes and base.peak_bytes:
            print(f"\nours / (a): peak memory x{mine.peak_bytes / base.peak_bytes:.2f} (goal <= 0.60), "
                  f"tokens/s x{mine.tokens_per_s / base.tokens_per_s:.2f}")
        print(f"ours / faster of (a),(b): tokens/s x{mine.tokens_per_s / fastest:.2f} (goal >= 1.30 on long-tailed data)")
        if mine.estimate_bytes and mine.estimate_measured_bytes:
            print(f"ours: estimated {mine.estimate_bytes / GIB:.2f} GiB, measured {mine.estimate_measured_bytes / GIB:.2f} GiB, "
                  f"error {mine.estimate_error_pct:+.1f}%; engine {mine.settings}")
    save()


if __name__ == "__main__":
    main()
