"""Write the demo run directory the wizard's snapshots and screenshots show.

A hand-made run (events.jsonl in the trainer's event format, status.json,
config.yaml, train.log, and an adapter folder holding only its config and model
card): deterministic numbers, no clock, nothing machine-specific. Run it again
after changing the event format: `python3 -m screenshots.make_demo_run` (from the repository root).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

from screenshots import REPO, SCENE_FILES

DEMO = REPO / SCENE_FILES / "runs" / "capn-lora-demo"
GIB = 1024 ** 3
MAX_STEPS = 60
T0 = 1_700_000_000.0  # fixed clock: events carry times, the screens show only differences


def _loss(step: int) -> float:
    return round(2.1 * math.exp(-step / 18) + 0.62 + 0.06 * math.sin(step * 1.7), 4)


def demo_events(last_step: int = MAX_STEPS, finished: bool = True) -> list[dict]:
    events: list[dict] = []

    def add(kind: str, t: float, **fields) -> None:
        events.append({"seq": len(events) + 1, "time": round(T0 + t, 3), "type": kind, **fields})

    add("started", 0.0, model="embedded:SmolLM2-135M-Instruct", model_path="~/.cache/lora_tui/models/SmolLM2-135M-Instruct",
        method="LoRA", device="cuda", precision="bf16",
        target_modules=["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        trainable_params=4884480, total_params=139399488, max_steps=MAX_STEPS, epochs=3.0,
        num_train_rows=303, num_eval_rows=40,
        data={"train": {"path": "sample_data/train.jsonl", "sha256": "0" * 64, "rows": 303},
              "validation": {"path": "sample_data/valid.jsonl", "sha256": "1" * 64, "rows": 40}},
        command="lora-tui train runs/capn-lora-demo/config.yaml --run-dir NEW_DIR", resumed_from=None)
    add("eval", 4.0, step=0, phase="before", eval_loss=2.7411, perplexity=15.505)
    for step in range(1, last_step + 1):
        t = 4.0 + step * 1.5
        add("step", t, step=step, max_steps=MAX_STEPS, epoch=round(step * 3.0 / MAX_STEPS, 4), loss=_loss(step),
            lr=round(1e-4 * min(1.0, step / 2) * 0.5 * (1 + math.cos(math.pi * step / MAX_STEPS)), 8),
            grad_norm=round(0.9 / (1 + step / 30), 4), tokens_per_s=2450.0 + 10 * (step % 5),
            tokens_seen=step * 3720, elapsed_s=round(t, 2), eta_s=round((MAX_STEPS - step) * 1.5, 2))
        if step % 10 == 0:
            add("system", t + 0.1, gpus=[{"index": 0, "util": 97, "mem_used": int(5.8 * GIB),
                                          "mem_total": int(24 * GIB), "temp": 66, "power": 312.0}],
                cpu_percent=101.0, rss=int(2.4 * GIB), ram_used=int(11.2 * GIB), ram_total=int(62.7 * GIB))
        if step % 20 == 0:
            add("eval", t + 0.5, step=step, phase="after" if finished and step == MAX_STEPS else "during",
                eval_loss=round(_loss(step) + 0.08, 4), perplexity=round(math.exp(_loss(step) + 0.08), 3))
            add("checkpoint", t + 0.8, step=step, path=f"runs/capn-lora-demo/checkpoints/checkpoint-{step}")
    if finished:
        add("finished", 4.0 + MAX_STEPS * 1.5 + 3, step=MAX_STEPS, adapter="runs/capn-lora-demo/adapter",
            train_loss=_loss(MAX_STEPS), eval_loss=round(_loss(MAX_STEPS) + 0.08, 4),
            perplexity=round(math.exp(_loss(MAX_STEPS) + 0.08), 3), runtime_s=97.0)
    return events


LOG = """\
lora-tui trainer: run capn-lora-demo
Loading embedded:SmolLM2-135M-Instruct (16bit, bf16) on cuda
trainable params: 4,884,480 || all params: 139,399,488 || trainable%: 3.5040
{'loss': '0.9318', 'grad_norm': '0.415', 'learning_rate': '3.71e-05', 'epoch': '1.75'}
"""
LOG_END = """\
{'loss': '0.6871', 'grad_norm': '0.3214', 'learning_rate': '2.4e-06', 'epoch': '2.95'}
{'train_runtime': '97.0', 'train_samples_per_second': '9.37', 'epoch': '3.0'}
Adapter saved to runs/capn-lora-demo/adapter
"""

CARD = """\
# capn-lora-demo: LoRA adapter for embedded:SmolLM2-135M-Instruct

A LoRA adapter trained with lora-tui. Run state: finished.

| Setting | Value |
|---|---|
| Base model | `embedded:SmolLM2-135M-Instruct` |
| Method | LoRA |
| Rank (r) / alpha / dropout | 16 / 32 / 0.05 |
| Target modules | down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj |
| Steps | 60 (3 epochs) |
| Final train / eval loss | 0.69 / 0.77 |
"""


def write_demo_run(target: Path = DEMO, last_step: int = MAX_STEPS, finished: bool = True) -> Path:
    from lora_tui.core.config import Config, save_config

    shutil.rmtree(target, ignore_errors=True)
    (target / "adapter").mkdir(parents=True)
    config = Config()
    config.training.max_steps = MAX_STEPS
    config.output.run_name = target.name
    save_config(config, target / "config.yaml", header=f"lora-tui run '{target.name}' (demo for the snapshots)")
    events = demo_events(last_step, finished)
    (target / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    last = [e for e in events if e["type"] == "step"][-1]
    status = {"state": "finished" if finished else "running", "pid": 0, "step": last["step"],
              "max_steps": MAX_STEPS, "epoch": last["epoch"], "loss": last["loss"], "eval_loss": None,
              "tokens_per_s": last["tokens_per_s"], "eta_s": last["eta_s"], "message": "", "updated": T0}
    (target / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    (target / "train.log").write_text(LOG + (LOG_END if finished else ""))
    (target / "adapter" / "README.md").write_text(CARD)
    (target / "adapter" / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "embedded:SmolLM2-135M-Instruct", "peft_type": "LORA", "r": 16,
        "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}, indent=2) + "\n")
    return target


if __name__ == "__main__":
    print(write_demo_run(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO))
