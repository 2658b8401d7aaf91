"""lora_tui: a terminal wizard for LoRA / QLoRA fine-tuning.

This package must stay cheap to import: nothing here imports torch.
"""

__version__ = "0.1.0"
