"""The probe's cache: what a measurement depends on, and the results kept per key (core/train/probe.py).

One JSON file, ``cache_dir()/probe.json``, written atomically and bounded to the newest entries; a
damaged or unwritable file is a miss, never an error. Must not import torch or textual.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

CACHE_VERSION = 1
CACHE_ENTRIES = 64  # the cache file keeps the newest entries only (bounded size)


def cache_path() -> Path:
    from lora_tui.core.paths import cache_dir

    return cache_dir() / "probe.json"


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "liger-kernel", "accelerate"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _model_config_hash(model_path: str) -> str:
    config = Path(model_path) / "config.json"
    try:
        text = config.read_text(encoding="utf-8")
        data = json.loads(text)
        data.pop("_name_or_path", None)
        data.pop("transformers_version", None)
        text = json.dumps(data, sort_keys=True)
    except (OSError, ValueError):
        text = str(model_path)  # a hub id without a local config: its name stands for its shapes
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(config, device: str, device_facts: dict, model_path: str, lengths: list[int], choice, walks) -> str:
    """What the measurement depends on: the device, the model's shapes, the rows' shape, LoRA, libraries,
    and the candidates asked about."""
    longest = sorted(lengths, reverse=True)[:64]
    parts = {
        "v": CACHE_VERSION, "device": device, "gpu": device_facts, "model": _model_config_hash(model_path),
        "load_in": config.model.load_in, "double_quant": config.model.double_quant,
        "max_seq_len": config.data.max_seq_len, "longest_rows": longest,
        "lora": [config.lora.r, config.lora.targets, config.lora.dropout, config.lora.use_dora, config.lora.use_rslora],
        "precision": config.training.precision, "batching": choice.batching, "attention": choice.attention,
        "kernels": [k for k in choice.kernels if k != "liger"], "libraries": _versions(),
        "candidates": [[asdict(c) for c in walk] for walk in walks],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError):
        return {}


def cached(key: str) -> dict | None:
    return (_read_cache().get("entries") or {}).get(key)


def store(key: str, facts: dict) -> None:
    """Keep this result (``ProbeResult.facts()``) (atomic write; the newest CACHE_ENTRIES only). A cache that cannot be written is no error."""
    data = _read_cache()
    entries = data.get("entries") or {}
    entries[key] = {"time": time.time(), **facts}
    newest = sorted(entries.items(), key=lambda kv: kv[1].get("time", 0))[-CACHE_ENTRIES:]
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".probe.json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": dict(newest)}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
