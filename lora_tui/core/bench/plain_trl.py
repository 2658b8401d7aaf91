"""The baseline `lora-tui bench` compares against: the plain TRL SFTTrainer + PEFT script a user
would write by hand, with one measuring callback. Run as its own process (fresh peak memory):

    python -m lora_tui.core.bench.plain_trl SPEC_JSON

SPEC_JSON holds model, data (a JSONL of {"messages"} or {"text"} rows), steps, max_len,
learning_rate, lora {r, alpha, dropout, targets}, out, mode, quant and optionally batch; with method
"dpo" / "kto" (and beta) the script is TRL's DPOTrainer / KTOTrainer instead, on TRL's conversational
preference rows (core.bench.preference_data), in mode "defaults" (TRL 1.16's DPO has no packing). Only
those are set; every other training setting is TRL's own default (bf16 autocast on a GPU, gradient
checkpointing, micro-batch 8, ...) unless the mode asks for more: "defaults", "packing" (TRL's bfd
packing), "padding_free", "fp32" (fp32, no checkpointing). quant "4bit" loads the base in NF4 (QLoRA,
CUDA only); "none" loads it in bf16 on a GPU (16-bit LoRA), as the checkpoint is on a CPU.

Writes "step/max_steps" to ``<out>/progress`` after each optimiser step (`bench` shows it) and prints
one line ``RESULT {json}``: tokens (non-padding, between the first and the last optimiser
step), seconds, tokens_per_s, the settings TRL used, and max_memory_reserved on CUDA. Nothing here
is imported by the wizard; torch and TRL are imported inside main().
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MODES = ("defaults", "packing", "padding_free", "fp32")


def trl_arguments(spec: dict, cuda: bool) -> dict:
    """SFTConfig arguments: measuring-only settings, the spec's shared ones, and the mode's extras."""
    args = {"output_dir": spec["out"], "report_to": "none", "disable_tqdm": True, "save_strategy": "no",
            "include_num_input_tokens_seen": "non_padding", "max_steps": int(spec["steps"]),
            "learning_rate": float(spec.get("learning_rate", 1e-4)), "max_length": int(spec["max_len"]),
            "logging_steps": 1000}
    if spec.get("batch"):
        args["per_device_train_batch_size"] = int(spec["batch"])
    mode = spec.get("mode", "defaults")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    if mode == "packing":
        args["packing"] = True
    if mode == "padding_free":
        args.update(padding_free=True, max_length=None)
    if mode == "fp32":
        args.update(bf16=False, gradient_checkpointing=False)
    if not cuda:
        args["use_cpu"] = True  # transformers refuses TRL's default bf16=True on a CPU-only machine without it
    return args


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lora_tui.core.bench.runner import step_rates

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args, state, control, **kw):
            self.marks.append((time.monotonic(), state.num_input_tokens_seen))
            progress.write_text(f"{state.global_step}/{state.max_steps}", encoding="utf-8")  # what `bench` shows

    progress = Path(spec["out"]) / "progress"  # core.bench.runner.PROGRESS_FILE
    progress.parent.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    load: dict = {}
    if spec.get("quant") == "4bit":
        from transformers import BitsAndBytesConfig

        load = {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=True,
                                                          bnb_4bit_compute_dtype=torch.bfloat16),
                "dtype": torch.bfloat16, "device_map": {"": 0}}
    elif cuda:
        load = {"dtype": torch.bfloat16}
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], **load)
    lora = spec.get("lora", {})
    clock = Clock()
    method = spec.get("method", "sft")
    if method == "sft":
        config = SFTConfig(**trl_arguments(spec, cuda))
        trainer_class = SFTTrainer
    else:  # the plain DPOTrainer / KTOTrainer a user would write, TRL's defaults but beta
        from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

        config_class, trainer_class = (KTOConfig, KTOTrainer) if method == "kto" else (DPOConfig, DPOTrainer)
        config = config_class(**trl_arguments(spec, cuda), beta=float(spec.get("beta", 0.1)))
    trainer = trainer_class(
        model=model, args=config, processing_class=tokenizer, callbacks=[clock],
        train_dataset=load_dataset("json", data_files=spec["data"], split="train"),
        peft_config=LoraConfig(r=int(lora.get("r", 16)), lora_alpha=int(lora.get("alpha", 32)),
                               lora_dropout=float(lora.get("dropout", 0.05)),
                               target_modules=lora.get("targets", "all-linear"), task_type="CAUSAL_LM"))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if len(clock.marks) < 2:
        raise SystemExit("plain TRL: fewer than two optimiser steps ran; nothing to time")
    (t0, n0), (t1, n1) = clock.marks[0], clock.marks[-1]
    result = {"tokens": int(n1 - n0), "seconds": t1 - t0, "tokens_per_s": (n1 - n0) / (t1 - t0),
              "steps": len(clock.marks), "device": "cuda" if cuda else "cpu",
              "step_tokens_per_s": step_rates(clock.marks),  # core.bench.runner.uneven_lines reads them
              "settings": {"micro_batch": config.per_device_train_batch_size,
                           "gradient_checkpointing": bool(config.gradient_checkpointing), "bf16": bool(config.bf16),
                           "packing": bool(getattr(config, "packing", False)), "padding_free": bool(config.padding_free)
                           if hasattr(config, "padding_free") else False, "quant": spec.get("quant", "none"),
                           **({"method": method, "loss_type": config.loss_type} if method != "sft" else {})}}
    if cuda:
        result["max_reserved"] = torch.cuda.max_memory_reserved()
    print("RESULT", json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
