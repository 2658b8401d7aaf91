"""The Textual wizard: a client of lora_tui.core and of run directories."""
