"""Baseline for benchmarks/train_vs_trl.py: the plain TRL SFTTrainer + PEFT script a user
would write by hand, with one measuring callback. Prints one JSON line of figures."""

import json
import sys
import time

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

model_dir, data, steps, batch, max_len, out = sys.argv[1:7]


class Clock(TrainerCallback):
    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kw):
        self.marks.append((time.monotonic(), state.num_input_tokens_seen))


tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
clock = Clock()
trainer = SFTTrainer(
    model=model,
    args=SFTConfig(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch),
                   gradient_accumulation_steps=1, learning_rate=1e-4, max_length=int(max_len), use_cpu=True,
                   report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True,
                   include_num_input_tokens_seen="non_padding", seed=42),
    train_dataset=load_dataset("json", data_files=data, split="train"),
    processing_class=tokenizer,
    peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"),
    callbacks=[clock],
)
trainer.train()
(t0, n0), (t1, n1) = clock.marks[0], clock.marks[-1]
print("RESULT", json.dumps({"tokens": int(n1 - n0), "seconds": t1 - t0, "tokens_per_s": (n1 - n0) / (t1 - t0)}))
