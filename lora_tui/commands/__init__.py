"""Headless front-ends of the CLI: each module has ``run(args) -> int`` that calls
``lora_tui.core`` and prints for a terminal. No Textual here either."""
