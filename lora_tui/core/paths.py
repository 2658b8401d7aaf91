"""Where lora_tui keeps its own files (model cache, default runs folder).

Only path arithmetic here: no imports of heavy libraries, no I/O beyond mkdir.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: $LORA_TUI_CACHE, else $XDG_CACHE_HOME/lora_tui, else ~/.cache/lora_tui."""
    if os.environ.get("LORA_TUI_CACHE"):
        return Path(os.environ["LORA_TUI_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base).expanduser() / "lora_tui"


def runs_dir() -> Path:
    """Default parent folder of run directories: $LORA_TUI_RUNS, else ./runs."""
    return Path(os.environ.get("LORA_TUI_RUNS", "runs")).expanduser()
