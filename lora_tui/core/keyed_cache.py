"""One small on-disk cache of JSON entries by key, shared by the probe (core/train/probe_cache.py) and the
data lengths (core/train/data_lengths_cache.py).

One JSON file ``{"version": v, "entries": {key: {..., "time": t}}}``, the newest ``max_entries`` only,
written atomically (a temporary file of its own renamed over it, so threads and processes never mix
writes) and read with ``safe_read.read_bounded`` to at most ``max_bytes``: a damaged, huge or special file
(a FIFO, /dev/zero) or an entry of the wrong shape is a miss with a plain reason, never an error or a
hang, and the next store rewrites the file without it. A file of another version is a silent miss.
Must not import torch or textual.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class KeyedCache:
    name: str  # in the user's words: "the probe cache"
    path: Callable[[], Path]  # called each time: the cache folder follows $LORA_TUI_CACHE
    version: int
    max_entries: int
    max_bytes: int
    entry_problem: Callable[[object], str | None]  # why an entry cannot be used; None when it can

    def read(self) -> tuple[dict, str | None]:
        """(the valid entries by key, why the file or some entries were not used: None when all were)."""
        from lora_tui.core.safe_read import read_bounded

        path = self.path()
        if not os.path.lexists(path):
            return {}, None
        try:
            data = json.loads(read_bounded(path, self.max_bytes, self.name))
        except OSError as exc:  # UnsafeFile: a FIFO, a device, over max_bytes, unreadable
            return {}, f"{self.name} was not read ({str(exc).split(': ', 1)[-1].split('. Fix')[0]})"
        except (ValueError, RecursionError):
            return {}, f"{self.name} {path} is not JSON"
        if not isinstance(data, dict) or data.get("version") != self.version:
            return {}, None if isinstance(data, dict) else f"{self.name} {path} is not a JSON object"
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}, f"{self.name} {path} holds no table of entries"
        good = {k: v for k, v in entries.items() if self.entry_problem(v) is None}
        bad = len(entries) - len(good)
        return good, f"{bad} damaged entr{'y' if bad == 1 else 'ies'} in {self.name} {path}" if bad else None

    def get(self, key: str | None) -> dict | None:
        return self.read()[0].get(key) if key else None

    def store(self, key: str, entry: dict) -> None:
        """Keep ``entry`` under ``key`` with the time (the newest ``max_entries``; damaged entries and a damaged
        file are dropped). A cache that cannot be written is no error."""
        entries, _ = self.read()
        entries[key] = {"time": time.time(), **entry}
        newest = dict(sorted(entries.items(), key=lambda kv: kv[1].get("time", 0))[-self.max_entries:])
        path = self.path()
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # one per writer (threads too)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": self.version, "entries": newest}, fh, indent=1)
            os.replace(tmp, path)  # a FIFO or a link to /dev/zero at the path is replaced, never opened
        except OSError:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
