"""The memory plan of a run: the one place that translates a Config into the
estimator's ``MemoryPlan`` (and, in time, a fix back into ``section.key=value`` overrides).

Pure Python (config only): the wizard imports this at start-up, so no torch, no textual.
"""

from __future__ import annotations

from lora_tui.core.config import Config

QUANT_FOR_LOAD = {"16bit": "none", "8bit": "8bit", "4bit": "4bit"}
DTYPE_FOR_PRECISION = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def memory_plan_for(config: Config, hardware=None, model: str | None = None):
    """The MemoryPlan of the run this Config would start, on this hardware (GPU 0 when there is one,
    like the trainer), optionally for another model (the wizard's catalogue table)."""
    from lora_tui.core.memory import MemoryPlan

    device = "cuda" if hardware is not None and hardware.gpus else "cpu"
    return MemoryPlan(
        model=model or config.model.name,
        quant=QUANT_FOR_LOAD[config.model.load_in],
        double_quant=config.model.double_quant,
        r=config.lora.r,
        targets=config.lora.targets,
        seq_len=config.data.max_seq_len,
        batch=config.training.micro_batch,
        grad_checkpointing=config.training.gradient_checkpointing,
        device=device,
        dtype=None if device == "cpu" else DTYPE_FOR_PRECISION[config.training.precision],
        dropout=config.lora.dropout,
    )
