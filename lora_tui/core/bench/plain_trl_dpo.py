"""The baseline `lora-tui bench --method dpo` (or kto) compares against: the plain TRL DPOTrainer (KTOTrainer)
+ PEFT script a user would write by hand, with one measuring callback. Run as its own process (fresh peak):

    python -m lora_tui.core.bench.plain_trl_dpo SPEC_JSON

SPEC_JSON as for core.bench.plain_trl (model, data, steps, max_len, learning_rate, lora, out, quant, batch)
plus method (dpo | kto) and beta. The data is TRL's conversational preference format (prompt / chosen /
rejected, or KTO's prompt / completion / label), written by ``preference_rows``; TRL tokenises it itself.
Only those settings are set; everything else is TRL's default (bf16 and gradient checkpointing on a GPU,
micro-batch 8, sigmoid / kto loss, ...). TRL 1.16's DPO has no packing (its padding_free falls back), so
there is no packed arm. Prints ``RESULT {json}`` as plain_trl does. Imported by nothing the wizard loads.
"""

from __future__ import annotations

import json
import sys


def preference_rows(config) -> list[dict]:
    """The user's preference rows as TRL reads them (conversational), as lora-tui reads them."""
    from lora_tui.core.data.preference_load import load_preferences

    loaded = load_preferences(config.data.train, config.training.method, subset=config.data.subset,
                              max_seq_len=config.data.max_seq_len)
    rows = []
    for e in loaded.examples:
        prompt = e.prompt if isinstance(e.prompt, list) else [{"role": "user", "content": e.prompt}]
        if e.paired:
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": e.chosen}],
                         "rejected": [{"role": "assistant", "content": e.rejected}]})
        else:
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": e.completion}], "label": e.label})
    return rows


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    import time

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from lora_tui.core.bench.plain_trl import trl_arguments

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_step_end(self, args, state, control, **kw):
            self.marks.append((time.monotonic(), state.num_input_tokens_seen))

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
    kto = spec.get("method") == "kto"
    args = {**trl_arguments({**spec, "mode": "defaults"}, cuda), "beta": float(spec.get("beta", 0.1))}
    config = (KTOConfig if kto else DPOConfig)(**args)
    clock = Clock()
    trainer = (KTOTrainer if kto else DPOTrainer)(
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
              "settings": {"micro_batch": config.per_device_train_batch_size,
                           "gradient_checkpointing": bool(config.gradient_checkpointing), "bf16": bool(config.bf16),
                           "method": spec.get("method", "dpo"), "loss_type": config.loss_type,
                           "quant": spec.get("quant", "none")}}
    if cuda:
        result["max_reserved"] = torch.cuda.max_memory_reserved()
    print("RESULT", json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
