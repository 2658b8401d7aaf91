"""Two lines libraries print on every import of bitsandbytes here, that say nothing a user can act on:

- ``kernels._internals.hf_hub``: "Skipping publisher trust check for 'kernels-community/quantization-
  bitsandbytes' because Hugging Face Hub is in offline mode." (kernels, asked by bitsandbytes, offline);
- ``bitsandbytes.backends.cpu.ops``: "Failed to load CPU gemm_4bit_forward from kernels-community: ...
  Please make sure you already `pip install kernels`" (bitsandbytes then uses its own CPU 4-bit path,
  which is what it does without the optional kernel: 4-bit works, `lora-tui doctor` checks it).

Both come through ``logging`` (Python's last-resort handler writes them to stderr), at import time,
into `doctor`, `chat`, `merge` and the top of train.log. ``drop_library_noise()`` puts a filter on
those two loggers that drops exactly these two messages by their opening words; every other record
of theirs, warnings and errors alike, still shows. Must not import the libraries (no torch).
"""

from __future__ import annotations

import logging

NOISE = {  # logger name -> the openings of the messages dropped from it
    "kernels._internals.hf_hub": ("Skipping publisher trust check for ",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}


class _DropKnown(logging.Filter):
    def __init__(self, openings: tuple[str, ...]) -> None:
        super().__init__()
        self.openings = openings

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.openings))


def drop_library_noise() -> None:
    """Filter the two known messages at their loggers (once per process; safe to call again)."""
    for name, openings in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(openings))
