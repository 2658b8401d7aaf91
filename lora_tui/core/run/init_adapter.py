"""``training.init_adapter``: the adapter a run starts from (usually an SFT run's, before dpo / kto),
resolved and checked before a run directory exists.

A run name or folder, or a bare PEFT adapter folder (``run.adapters.find_adapter``). Refused in one line:
a run still training or without a final adapter, an adapter trained on another base model. The trainer
(core/train/preference_model.py) loads it trainable and keeps training its weights, so the new run's
``adapter/`` is one self-contained PEFT adapter on the base (not a second one stacked on the first).

Must not import torch / peft or print.
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_tui.core.model.hub_ids import portable_base
from lora_tui.core.run.adapters import AdapterError, find_adapter
from lora_tui.core.run.runs import RunError


def init_adapter_dir(config) -> Path | None:
    """The absolute adapter folder ``config.training.init_adapter`` names (None when unset); RunError with
    the fix when it cannot be used for ``config.model.name``."""
    value = config.training.init_adapter
    if not value:
        return None
    try:
        source = find_adapter(value, require_adapter=True, allow_checkpoint=False)
    except AdapterError as exc:
        raise RunError(f"training.init_adapter={value}: {exc}") from None
    if source.adapter_dir is None or source.note:  # a checkpoint of a run still training
        raise RunError(f"training.init_adapter={value}: the run has no final adapter yet. Fix: wait for it to "
                       "finish (or stop it), then start again.")
    theirs, ours = portable_base(source.base_model)[0], portable_base(config.model.name)[0]
    if theirs != ours:
        raise RunError(f"training.init_adapter={value} was trained on {source.base_model}, and model.name is "
                       f"{config.model.name}. Fix: model.name={source.base_model}, or another adapter.")
    return source.adapter_dir.resolve()


def adapter_settings(adapter_dir: Path) -> dict:
    """The LoRA settings an adapter was saved with (r, alpha, targets...): they, not config.lora, shape the run."""
    try:
        return json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
