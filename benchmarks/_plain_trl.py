"""Baseline for benchmarks/train_vs_trl.py: the plain TRL SFTTrainer + PEFT script a user would
write by hand, with one measuring callback. Prints one RESULT line of JSON figures.

Only model, data, LoRA settings, micro-batch, max length, steps and learning rate are set; every
other training setting is TRL's own default (bf16 autocast, gradient checkpointing, ...), unless
a mode asks for more: "defaults", "packing" (TRL bfd packing), "padding_free", "fp32" (our old
settings: fp32, no checkpointing), and "+4bit" for a QLoRA load on CUDA.

    python benchmarks/_plain_trl.py MODEL DATA STEPS BATCH MAX_LEN OUT [MODE]
"""

import json
import sys
import time

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
from trl import SFTConfig, SFTTrainer

model_dir, data, steps, batch, max_len, out = sys.argv[1:7]
mode = sys.argv[7] if len(sys.argv) > 7 else "defaults"


class Clock(TrainerCallback):
    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kw):
        self.marks.append((time.monotonic(), state.num_input_tokens_seen))


extra: dict = {}
if "packing" in mode:
    extra["packing"] = True
if "padding_free" in mode:
    extra.update(padding_free=True, max_length=None)
if "fp32" in mode:
    extra.update(bf16=False, gradient_checkpointing=False)
load: dict = {}
if "4bit" in mode:
    load = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16),
            "dtype": torch.bfloat16, "device_map": {"": 0}}
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, **load)
clock = Clock()
# Measuring only: where to write, no external reporting, count non-padding tokens.
args = {"output_dir": out, "report_to": "none", "disable_tqdm": True, "include_num_input_tokens_seen": "non_padding",
        "max_steps": int(steps), "per_device_train_batch_size": int(batch), "learning_rate": 1e-4,
        "max_length": int(max_len), **extra}
if not torch.cuda.is_available():
    args["use_cpu"] = True  # transformers refuses TRL's default bf16=True on a CPU-only machine without it
trainer = SFTTrainer(
    model=model,
    args=SFTConfig(**args),
    train_dataset=load_dataset("json", data_files=data, split="train"),
    processing_class=tokenizer,
    peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"),
    callbacks=[clock],
)
if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
trainer.train()
(t0, n0), (t1, n1) = clock.marks[0], clock.marks[-1]
result = {"tokens": int(n1 - n0), "seconds": t1 - t0, "tokens_per_s": (n1 - n0) / (t1 - t0)}
if torch.cuda.is_available():
    result["max_reserved"] = torch.cuda.max_memory_reserved()
print("RESULT", json.dumps(result))
