"""The probe's cache: what a measurement depends on, and the results kept per key (core/train/probe.py).

One JSON file, ``cache_dir()/probe.json``, kept by core/keyed_cache.py: written atomically and bounded
to the newest entries; a damaged or unwritable file is a miss, never an error. It is read to at most
CACHE_BYTES and never opened when it is not a regular file (a FIFO there blocked the trainer in
"loading" forever, /dev/zero or a 1 GB file filled memory); an entry of the wrong shape (a list, wrong
types) is ignored with a plain reason, and the next store rewrites the file without it. Must not import
torch or textual.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lora_tui.core.keyed_cache import KeyedCache
from lora_tui.core.train.probe_types import FIGURES, PLAN_KEYS

CACHE_VERSION = 2  # 2: measured on a throwaway trainer before the run's is built (issue 27)
CACHE_ENTRIES = 64  # the cache file keeps the newest entries only (bounded size)
CACHE_BYTES = 4 * 2**20  # 64 entries of a few KiB each; a bigger file is not one we wrote


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
    from lora_tui.core.safe_read import read_bounded

    config = Path(model_path) / "config.json"
    try:
        text = read_bounded(config, CACHE_BYTES).decode("utf-8")
        data = json.loads(text)
        data.pop("_name_or_path", None)
        data.pop("transformers_version", None)
        text = json.dumps(data, sort_keys=True)
    except (OSError, ValueError):
        text = str(model_path)  # a hub id without a local config: its name stands for its shapes
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(config, device: str, device_facts: dict, model_path: str, lengths: list[int], choice, walks) -> str:
    """What the measurement depends on: the device, the model's shapes, the rows' shape, LoRA, libraries,
    and the plans asked about (``walks``: lists of ``probe_types.plan_record``)."""
    longest = sorted(lengths, reverse=True)[:64]
    parts = {
        "v": CACHE_VERSION, "device": device, "gpu": device_facts, "model": _model_config_hash(model_path),
        "load_in": config.model.load_in, "double_quant": config.model.double_quant,
        "max_seq_len": config.data.max_seq_len, "longest_rows": longest,
        "lora": [config.lora.r, config.lora.targets, config.lora.dropout, config.lora.use_dora, config.lora.use_rslora],
        "precision": config.training.precision, "batching": choice.batching, "attention": choice.attention,
        "kernels": [k for k in choice.kernels if k != "liger"], "libraries": _versions(),
        "candidates": walks,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache() -> tuple[dict, str | None]:
    """(the cache's valid entries by key, why the file or some entries were not used: None when all were)."""
    return CACHE.read()


def entry_problem(entry) -> str | None:
    """Why a cache entry cannot be used (wrong shape or types), in a few words; None when it can."""
    if not isinstance(entry, dict) or not _plan_ok(entry.get("chosen")):
        return "its chosen plan is missing or has wrong values"
    measurements = entry.get("measurements", [])
    if not isinstance(measurements, list) or not all(
            isinstance(m, dict) and _plan_ok(m.get("candidate")) and set(m) <= FIGURES
            for m in measurements):
        return "its measurements are not plans with figures"
    if not isinstance(entry.get("reason", ""), str) or type(entry.get("time", 0)) not in (int, float):
        return "its reason or time has the wrong type"
    return None


def _plan_ok(plan) -> bool:
    """A ``probe_types.plan_record``: its keys, each of the right type."""
    def count(value) -> bool:
        return type(value) is int and 0 < value < 2**31

    return (isinstance(plan, dict) and set(plan) <= PLAN_KEYS
            and count(plan.get("micro_batch")) and count(plan.get("grad_accum"))
            and type(plan.get("gradient_checkpointing")) is bool and type(plan.get("liger", False)) is bool
            and (plan.get("tokens_per_batch") is None or count(plan.get("tokens_per_batch"))))


def lookup(key: str) -> tuple[dict | None, str | None]:
    """(the entry for ``key`` or None, why the cache, or this key's entry, was not usable: None when it was)."""
    entries, problem = _read_cache()
    return entries.get(key), problem


def cached(key: str) -> dict | None:
    return lookup(key)[0]


def store(key: str, facts: dict) -> None:
    """Keep this result (``ProbeResult.facts()``) (keyed_cache: atomic, the newest CACHE_ENTRIES only, damaged
    entries and a damaged file dropped). A cache that cannot be written is no error."""
    CACHE.store(key, facts)


CACHE = KeyedCache("the probe cache", cache_path, CACHE_VERSION, CACHE_ENTRIES, CACHE_BYTES, entry_problem)
