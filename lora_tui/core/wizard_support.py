"""Small pure helpers the wizard needs from the core: the `lora-tui train` command
equivalent to a Config, and which preset (if any) a Config matches.

Pure Python (config only): imported by the wizard at start-up, so no torch,
no textual, no I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Any

from lora_tui.core.config import PRESETS, SECTION_HELP, Config


def _cli_value(value: Any) -> str:
    """A value as `section.key=value` text that check_value reads back to the same value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") and "e" not in text else text
    return str(value)


def config_overrides(config: Config, base: Config | None = None) -> list[str]:
    """``section.key=value`` for every field of ``config`` that differs from ``base`` (defaults)."""
    base = base or Config()
    out = []
    for section in SECTION_HELP:
        ours, theirs = getattr(config, section), getattr(base, section)
        for f in fields(ours):
            value = getattr(ours, f.name)
            if value != getattr(theirs, f.name):
                out.append(f"{section}.{f.name}={_cli_value(value)}")
    return out


def train_command(config: Config, config_path: str | None = None) -> str:
    """The headless command that trains what the wizard would: `lora-tui train CONFIG.yaml`
    when the config was saved unchanged, else the overrides on top of the defaults."""
    if config_path:
        return f"lora-tui train {shlex.quote(str(config_path))}"
    parts = ["lora-tui", "train", *config_overrides(config)]
    return " ".join(shlex.quote(p) for p in parts)


def matching_preset(config: Config) -> str | None:
    """The preset whose every value the config has, or None (custom)."""
    for name, sections in PRESETS.items():
        if all(getattr(getattr(config, section), key) == value
               for section, values in sections.items() for key, value in values.items()):
            return name
    return None


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
