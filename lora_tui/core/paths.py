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


def runs_dir(configured: str | os.PathLike | None = None) -> Path:
    """The parent folder of run directories, the same for every command and the wizard:
    ``configured`` (a config's ``output.runs_dir``, or `runs --dir`) when set, else
    $LORA_TUI_RUNS, else ./runs. So `train` writes where `runs`, `attach` and the wizard
    look unless a config names another folder for its own run."""
    chosen = str(configured or "").strip() or os.environ.get("LORA_TUI_RUNS", "").strip() or "runs"
    return Path(chosen).expanduser()


def sample_data_dir() -> Path:
    """The sample data: lora_tui/sample_data/ in a wheel install (setup.py copies it there),
    else sample_data/ of the checkout an editable install runs from."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "sample_data"
    return shipped if shipped.is_dir() else package.parent / "sample_data"


def resolve_data_path(path: str | os.PathLike) -> Path:
    """A dataset path as typed; 'sample_data/...' also resolves against the shipped
    sample data, so the defaults work from any working directory and any install."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate.resolve() if candidate.exists() else candidate
    parts = candidate.parts
    if parts and parts[0] == "sample_data":
        shipped = sample_data_dir().joinpath(*parts[1:])
        if shipped.exists():
            return shipped
    return candidate
