"""Throughput and memory of `lora-tui train` against a plain TRL SFTTrainer script.

Same machine, same run of this script: the embedded SmolLM2-135M-Instruct, the sample
data, LoRA r 16 / alpha 32 / dropout 0.05 on all linear layers, fp32 on CPU, micro-batch
8, max length 256, the same number of steps. Each side runs in its own child process;
peak RSS is that child's ru_maxrss; tokens/s counts non-padding tokens between the
first and the last optimiser step (so model loading and evaluation are left out).

    python benchmarks/train_vs_trl.py [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def measured(cmd: list[str]) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    rss_kb = int(next(l for l in result.stdout.splitlines() if l.startswith("MAXRSS_KB")).split()[1])
    return result.stdout, rss_kb * 1024


def ours(model_dir: str, data: Path, steps: int, batch: int, max_len: int, tmp: Path) -> dict:
    from lora_tui.core.config import Config, apply_overrides, save_config
    from lora_tui.core.runs import RunDirectory

    config = apply_overrides(Config(), [
        f"data.train={data}", "data.validation=", "data.val_fraction=0", f"data.max_seq_len={max_len}",
        "lora.r=16", "lora.alpha=32", "lora.dropout=0.05", "lora.targets=all-linear",
        f"training.max_steps={steps}", f"training.micro_batch={batch}", "training.grad_accum=1",
        "training.learning_rate=1e-4", "training.save_steps=0", "training.eval_steps=0"])
    run = RunDirectory(tmp / "ours")
    run.path.mkdir()
    save_config(config, run.config_path)
    # The same worker `lora-tui train` spawns, run as a direct child so its peak RSS can be read.
    _, rss = measured([sys.executable, "-m", "lora_tui.core.trainer_main", str(run.path)])
    steps_ev = [e for e in run.read_events() if e["type"] == "step"]
    first, last = steps_ev[0], steps_ev[-1]
    tokens, seconds = last["tokens_seen"] - first["tokens_seen"], last["elapsed_s"] - first["elapsed_s"]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "peak_rss": rss}


def plain(model_dir: str, data: Path, steps: int, batch: int, max_len: int, tmp: Path) -> dict:
    out, rss = measured([sys.executable, str(REPO / "benchmarks" / "_plain_trl.py"), model_dir, str(data),
                         str(steps), str(batch), str(max_len), str(tmp / "plain")])
    figures = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    return {**figures, "peak_rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=256)
    args = parser.parse_args()
    from lora_tui.core.embedded import ensure_embedded_model

    model_dir = str(ensure_embedded_model())
    data = REPO / "sample_data" / "train.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        base = plain(model_dir, data, args.steps, args.batch, args.max_len, Path(tmp))
        mine = ours(model_dir, data, args.steps, args.batch, args.max_len, Path(tmp))
    print(f"{'':22}{'tokens/s':>10}{'tokens':>9}{'seconds':>9}{'peak RSS':>11}")
    for name, r in (("plain TRL SFTTrainer", base), ("lora-tui train", mine)):
        print(f"{name:22}{r['tokens_per_s']:>10.1f}{r['tokens']:>9}{r['seconds']:>9.1f}{r['peak_rss'] / 2**30:>9.2f} GiB")
    print(f"ratio lora-tui / plain: tokens/s x{mine['tokens_per_s'] / base['tokens_per_s']:.2f}, "
          f"peak RSS x{mine['peak_rss'] / base['peak_rss']:.2f}")


if __name__ == "__main__":
    main()
