"""A base model's hub id, both ways: what an adapter names as its base, and what to load here for it.

- ``portable_base``: what ``adapter_config.json`` should name as its base: the hub id for the
  embedded model and for hub models (so ``AutoPeftModelForCausalLM.from_pretrained(adapter)``
  works on any machine), a local directory's path for a local base (there is nothing better).
- ``local_base``: the base to load for an adapter that names one (the embedded copy for the
  embedded model's hub id when the hub's own copy is not cached), so chat and export work offline.

Shared by run/ (finding an adapter), export/ (model cards, hub push) and train/ (saving an adapter).
Must not print, write files, or import torch / transformers.
"""

from __future__ import annotations

import os
from pathlib import Path

from lora_tui.core.model.embedded import EMBEDDED_HUB_ID, EMBEDDED_MODEL, is_embedded
from lora_tui.core.model.models import model_kind


def portable_base(model_name: str) -> tuple[str, bool]:
    """(reference for base_model_name_or_path, whether it is a hub id)."""
    if is_embedded(model_name):
        return EMBEDDED_HUB_ID, True
    if model_kind(model_name) == "hub":
        return str(model_name), True
    return str(Path(os.path.expanduser(str(model_name))).resolve()), False


def local_base(reference: str) -> str:
    """The base to load for an adapter naming ``reference``: the embedded copy for the embedded model's
    hub id when the hub's own copy is not in the local cache (so chat and export keep working offline)."""
    if reference != EMBEDDED_HUB_ID:
        return reference
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(reference, "config.json"), str):
            return reference
    except Exception:
        pass
    return EMBEDDED_MODEL
