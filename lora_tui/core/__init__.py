"""The headless core of lora_tui: config, models, data, hardware, memory,
training, runs, chat and export.

Nothing under ``lora_tui.core`` may import ``textual`` or ``lora_tui.ui``;
heavy libraries (torch, transformers, peft, trl) are imported inside the
functions that need them so that the wizard paints before they load.
"""
