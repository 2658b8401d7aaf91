"""The data's measured longest row, kept on disk: `lora-tui estimate` and the wizard read it instead of
tokenizing the whole dataset again (core/train/data_lengths.py).

Measuring means loading the tokenizer (importing transformers and torch), the data and ``datasets``:
~5 s on the embedded model and the sample data on an idle machine, ~14 s under load, on every
`estimate`. A cached figure costs a few ``stat`` calls and one small read.

One JSON file, ``cache_dir()/data_lengths.json``: ``{"version": 1, "entries": {key: {"longest": n,
"time": t}}}``, kept by core/keyed_cache.py as the probe's cache is: the newest LENGTHS_ENTRIES only,
written atomically, read to at most LENGTHS_BYTES; a damaged, huge or special file (a FIFO, /dev/zero)
or an entry of the wrong shape is a miss, never an error or a hang. The key is
everything the figure depends on (``lengths_key``); what cannot be fingerprinted cheaply (a hub dataset,
a folder of more than FOLDER_FILES files, a hub model not in the local cache) has no key and is
measured every time. Must not import torch, transformers, datasets or textual.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lora_tui.core.keyed_cache import KeyedCache

LENGTHS_VERSION = 1  # bump when what a figure means changes (how rows are built or counted)
LENGTHS_ENTRIES = 256  # the newest entries only: the file stays a few tens of KiB
LENGTHS_BYTES = 1 * 2**20  # 256 entries of ~100 bytes; a bigger file is not one we wrote
FOLDER_FILES = 4096  # a data folder with more files is measured every time (its stat walk would cost)


def lengths_path() -> Path:
    from lora_tui.core.paths import cache_dir

    return cache_dir() / "data_lengths.json"


def _stat(path: Path) -> list:
    """What changes when a file's content does (size, modification and change times, inode); the
    change time cannot be set back by `touch -d` or `cp -p`."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _files(root: Path, recursive: bool) -> list | None:
    """[relative path, stat] of the regular files under ``root`` (a file: itself); None when it cannot be
    walked or holds more than FOLDER_FILES files."""
    try:
        if not root.is_dir():
            return [[root.name, _stat(root)]]
        out = []
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder) / name
                if path.is_file():
                    out.append([str(path.relative_to(root)), _stat(path)])
                    if len(out) > FOLDER_FILES:
                        return None
            if not recursive:
                break
        return out
    except OSError:
        return None


def _data_fingerprint(value: str | None):
    """A local data source's resolved path and files; None for no source; False when it cannot be had
    cheaply (a hub dataset, a missing path, a folder too large)."""
    if not value:
        return None
    from lora_tui.core.data.hub_data import absolute_source, parse_hub_id
    from lora_tui.core.paths import resolve_data_path

    if parse_hub_id(value) is not None:  # rows from the hub: their revision is not known without asking it
        return False
    source = absolute_source(value)  # a snapshot folder may carry ':split'
    path = resolve_data_path(value)
    if not path.exists() and ":" in str(value):
        path = resolve_data_path(str(value).rpartition(":")[0])
    files = _files(path.resolve(), recursive=True) if path.exists() else None
    return [source, files] if files else False


def _tokenizer_dir(config) -> Path | None:
    """The local folder the tokenizer is loaded from, without converting or downloading anything."""
    from lora_tui.core.model.embedded import converted_dir, is_converted
    from lora_tui.core.model.models import model_kind

    name = config.model.name
    kind = model_kind(name)
    if kind == "embedded":
        return converted_dir() if is_converted() else None
    if kind == "local":
        path = Path(os.path.expanduser(str(name)))
        return path if path.is_dir() else None
    try:  # a hub id: its snapshot in the local hub cache (a newer revision there is a new snapshot folder)
        from huggingface_hub import try_to_load_from_cache

        for filename in ("tokenizer_config.json", "config.json"):
            found = try_to_load_from_cache(name, filename, revision=config.model.revision)
            if isinstance(found, str):
                return Path(found).parent
    except Exception:  # noqa: BLE001 -- a malformed id: measuring says what is wrong with it
        return None
    return None


def _versions() -> dict:
    from importlib import metadata

    from lora_tui import __version__

    out = {"lora_tui": __version__}
    for name in ("transformers", "tokenizers", "jinja2"):  # they turn rows into tokens
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def lengths_key(config) -> str | None:
    """The key of ``config``'s figure: its data section with each source's resolved path and files' stats,
    the tokenizer's folder and files' stats, the method and seed (the held-out split), the versions of
    lora_tui and the tokenizing libraries. None when some part cannot be fingerprinted; never raises."""
    try:
        tokenizer_dir = _tokenizer_dir(config)
        tokenizer_files = _files(tokenizer_dir.resolve(), recursive=False) if tokenizer_dir is not None else None
        train = _data_fingerprint(config.data.train)
        validation = _data_fingerprint(config.data.validation)
        if not tokenizer_files or not train or validation is False:
            return None
        data = {k: v for k, v in config.to_dict()["data"].items() if k not in ("train", "validation")}
        parts = {  # train and validation by their resolved source: a run's config.yaml holds them absolute
            "v": LENGTHS_VERSION, "versions": _versions(), "data": data,
            "train": train, "validation": validation,
            # the tokenizer by its folder and files ('embedded' and its long name are one model)
            "model": [config.model.revision, config.model.trust_remote_code, str(tokenizer_dir.resolve()),
                      tokenizer_files],
            "method": config.training.method, "seed": config.training.seed,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
    except Exception:  # noqa: BLE001 -- no key is a miss: the figure is measured as before
        return None


def _entry_problem(entry) -> str | None:
    ok = (isinstance(entry, dict) and type(entry.get("longest")) is int and 0 < entry["longest"] < 2**31
          and type(entry.get("time", 0)) in (int, float))
    return None if ok else "not a row length"


CACHE = KeyedCache("the data lengths cache", lambda: lengths_path(), LENGTHS_VERSION, LENGTHS_ENTRIES, LENGTHS_BYTES,
                   _entry_problem)


def recall(key: str | None) -> int | None:
    """The longest row kept for ``key``, or None (a damaged cache is a miss)."""
    entry = CACHE.get(key)
    return entry["longest"] if entry else None


def keep(key: str | None, longest: int) -> None:
    """Keep ``longest`` for ``key`` (core/keyed_cache.py: atomic, the newest LENGTHS_ENTRIES, damaged entries
    dropped). A cache that cannot be written is no error."""
    if key and type(longest) is int and longest > 0:
        CACHE.store(key, {"longest": longest})


def keep_measured(config, longest: int) -> None:
    """Keep the trainer's own figure (``training.longest_row`` of the datasets it built for ``config``), so the
    next `lora-tui estimate` or wizard shows it without reading the data again. Never raises."""
    keep(lengths_key(config), longest)
