"""Datasets named by hub id (``org/name[:split]``) and local hub-snapshot folders, read through ``datasets``.

A path that exists locally always wins; ``org/name`` that does not exist here is a hub id. Both go
through ``datasets.load_dataset`` (``_load_split`` is the one caller), so they are cached the usual
way (the HF cache) and rows stream from the memory-mapped Arrow table, a batch at a time. Offline
with no cached copy, the one line says so and how to fix it. The resolved revision (the commit the
hub id resolved to) travels with the rows for the model card.

Never prints, never writes outside the HF cache; ``datasets`` is imported inside functions only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .records import DataError
from .rows import ARROW_BATCH_ROWS, ReadResult, arrow_rows, training_split

# org/name with an optional :split; hub names allow letters, digits, '-', '_' and '.'.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?::(?P<split>[A-Za-z0-9._-]+))?$")
# A missing "data/train.jsonl" is a mistyped file, not a hub id.
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".txt", ".arrow", ".yaml", ".yml")
SNAPSHOT_DATA = {".parquet", ".jsonl", ".json", ".csv", ".tsv", ".arrow"}  # data files a snapshot's data/ holds
SAVE_TO_DISK_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
LOCAL_SNAPSHOT = "local snapshot"


@dataclass(frozen=True)
class HubSpec:
    """A hub dataset id as typed: ``org/name`` and the split after a colon (None: 'train', else the first)."""

    repo_id: str
    split: str | None = None


@dataclass
class HubReadResult(ReadResult):
    """A ReadResult that also says where the rows came from: {"dataset", "subset", "split", "revision"}."""

    source: dict = field(default_factory=dict)


def parse_hub_id(path) -> HubSpec | None:
    """The hub id in `path`, or None when it is a local path (one that exists wins) or does not look like an id."""
    text = str(path).strip()
    match = HUB_ID.match(text)
    if not match or text.startswith("sample_data/"):
        return None
    repo = match["repo"]
    if ".." in repo or repo.lower().endswith(FILE_SUFFIXES):
        return None
    from lora_tui.core.paths import resolve_data_path

    if Path(text).expanduser().exists() or resolve_data_path(text).exists():
        return None
    return HubSpec(repo, match["split"])


def is_hub_source(path) -> bool:
    """Whether `path` is read through ``datasets.load_dataset`` (a hub id, or a local snapshot folder)."""
    return parse_hub_id(path) is not None or _snapshot_and_split(path) is not None


def absolute_source(value: str) -> str:
    """`value` as a run's config.yaml stores it: a local path made absolute (also `folder:split`), a hub id as is."""
    from lora_tui.core.paths import resolve_data_path

    if parse_hub_id(value) is not None:
        return value
    snapshot = _snapshot_and_split(value)
    if snapshot is not None and snapshot[1]:
        return f"{snapshot[0].resolve()}:{snapshot[1]}"
    return str(resolve_data_path(value))


def open_dataset(path, *, subset: str | None = None, tokenizer=None, max_seq_len: int = 1024) -> ReadResult:
    """Rows of `path`: a hub id or snapshot folder through ``datasets``, anything else through ``open_path``."""
    spec = parse_hub_id(path)
    if spec is not None:
        return open_hub(spec, subset)
    snapshot = _snapshot_and_split(path)
    if snapshot is not None:
        folder, split = snapshot
        return _read(str(folder), subset, split, "hub-snapshot",
                     {"dataset": str(folder), "subset": subset, "revision": LOCAL_SNAPSHOT})
    from .readers import open_path

    return open_path(path, tokenizer=tokenizer, max_seq_len=max_seq_len)


def open_hub(spec: HubSpec, subset: str | None = None) -> HubReadResult:
    """Load the hub dataset (or its cached copy); raises DataError with the fix when it cannot be had."""
    source = {"dataset": spec.repo_id, "subset": subset}
    try:
        return _read(spec.repo_id, subset, spec.split, "hub", source)
    except _Unreachable as exc:
        snapshot = _cached_snapshot(spec.repo_id)  # `hf download` filled the hub cache: datasets offline ignores it
        if snapshot is None:
            raise DataError(_offline_message(spec, exc.why)) from None
    return _read(str(snapshot), subset, spec.split, "hub", {**source, "revision": snapshot.name},
                 label=spec.repo_id)


def is_snapshot_folder(p: Path) -> bool:
    """A folder laid out like a hub dataset snapshot: a README.md card with `configs:`, or data files under data/."""
    if not p.is_dir() or any((p / marker).exists() for marker in SAVE_TO_DISK_MARKERS):
        return False
    readme = p / "README.md"
    if readme.is_file():
        try:
            with open(readme, encoding="utf-8", errors="replace") as fh:
                head = fh.read(65536)
        except OSError:
            head = ""
        if head.startswith("---") and re.search(r"^(configs|dataset_info):", head, re.M):
            return True
    data = p / "data"
    return data.is_dir() and any(f.suffix.lower() in SNAPSHOT_DATA for f in data.rglob("*") if f.is_file())


def _snapshot_and_split(path) -> tuple[Path, str | None] | None:
    """(folder, split) when `path` is a snapshot folder, or such a folder with ':split' after it."""
    from lora_tui.core.paths import resolve_data_path

    text = str(path).strip()
    if not text:
        return None
    folder = resolve_data_path(text)
    if is_snapshot_folder(folder):
        return folder, None
    base, _, split = text.rpartition(":")
    if base and split and re.fullmatch(r"[A-Za-z0-9._-]+", split):
        folder = resolve_data_path(base)
        if is_snapshot_folder(folder):
            return folder, split
    return None


class _Unreachable(Exception):
    """The hub cannot be reached (offline mode, or no network) and datasets has no cached copy."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _read(source: str, subset: str | None, split: str | None, container: str, info: dict,
          label: str | None = None) -> HubReadResult:
    label = label or info["dataset"]
    dataset, chosen, notes = _load_split(source, subset, split, label)
    info = {**info, "split": chosen}
    info.setdefault("revision", _revision(dataset))
    result = HubReadResult(container, findings=notes, source={k: v for k, v in info.items() if v is not None})

    # the Arrow table is memory-mapped: a batch of rows at a time, never the whole split
    result.stream = arrow_rows(result, dataset.with_format("arrow").iter(batch_size=ARROW_BATCH_ROWS))
    return result


def _load_split(source: str, subset: str | None, split: str | None, label: str):
    """(Dataset, split name, notes): the one call of ``datasets.load_dataset``. Raises DataError or _Unreachable."""
    unreachable = None if _offline() or Path(source).exists() else hub_unreachable()
    try:
        import datasets
        from datasets.exceptions import DatasetNotFoundError

        datasets.logging.set_verbosity_error()  # its "Using the latest cached version" warning is not ours to print
        with _offline_mode(unreachable is not None):  # no network: its cached copy, without 5 retries (24-58 s)
            loaded = datasets.load_dataset(source, name=subset or None, split=split or None)
    except ConnectionError:  # offline mode or no network, and datasets has no cached copy
        raise _Unreachable("offline mode is on" if _offline() else unreachable or "the Hub cannot be reached") from None
    except DatasetNotFoundError as exc:
        raise DataError(f"{label}: no such local file or folder, and no dataset of that id on the Hub "
                        f"({_first_line(exc)}). Fix: check the path or the id; for a private or gated dataset, "
                        "`hf auth login` first.") from None
    except Exception as exc:  # a wrong split or subset (ValueError), a broken data file, a pyarrow error...
        raise DataError(_load_error(label, subset, split, exc)) from None
    loaded, chosen, notes = training_split(loaded, label, "the dataset has no splits. Fix: point at a dataset with rows.",
                                           f"name another after a colon, e.g. {label}:{{other}}")  # as for save_to_disk
    split = chosen or split
    return loaded, split, notes


def _load_error(label: str, subset: str | None, split: str | None, exc: Exception) -> str:
    text = _first_line(exc).rstrip()
    text += "" if text.endswith((".", "!", "?")) else "."
    if "Unknown split" in text or "split" in text.lower() and split:
        return f"{label}: {text} Fix: name one of its splits after a colon, e.g. {label}:train."
    if "Config name is missing" in text or "BuilderConfig" in text:
        shown = f"subset '{subset}' not found: " if subset else "it has several subsets: "
        return f"{label}: {shown}{text} Fix: set data.subset=NAME to one of them."
    return f"{label}: cannot be loaded with datasets.load_dataset ({type(exc).__name__}: {text[:-1]}). " \
           "Fix: check the dataset's files, or export it to .jsonl or .parquet and point at that."


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


REACH_TIMEOUT_S = 3.0


def hub_unreachable(timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached from here, found in at most ``timeout`` seconds (a DNS look-up and a TCP
    connection to its host, or to the HTTPS proxy when one is set); None when it answers. Without this, a
    machine with no network and no offline setting waited through huggingface_hub's five retries (24-58 s,
    11 lines of "Retrying in 8s") before the one-line refusal."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" or not proxy else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__).lower()
        return f"the Hub cannot be reached ({host}:{port}: {reason} within {timeout:g} s)"
    return None


class _offline_mode:
    """While on: datasets and huggingface_hub act as with HF_HUB_OFFLINE=1 (cached copies only, no retries).
    They read these module flags at call time."""

    def __init__(self, on: bool) -> None:
        self.on, self.saved = on, []

    def __enter__(self):
        if self.on:
            import datasets.config
            from huggingface_hub import constants

            for module in (datasets.config, constants):
                self.saved.append((module, module.HF_HUB_OFFLINE))
                module.HF_HUB_OFFLINE = True
        return self

    def __exit__(self, *exc) -> None:
        for module, value in self.saved:
            module.HF_HUB_OFFLINE = value


def _offline_message(spec: HubSpec, why: str) -> str:
    return (f"{spec.repo_id}: not in the local cache, and {why}. Fix: run once with network, or "
            f"`hf download --repo-type dataset {spec.repo_id}`, or point data.train at a local copy.")


def _cached_snapshot(repo_id: str) -> Path | None:
    """The hub cache's snapshot folder of the dataset (as `hf download` leaves it), or None."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, or a broken cache: treated as not cached
        return None
    return folder if folder.is_dir() else None


def _revision(dataset) -> str | None:
    """The commit sha datasets resolved, read from its cache folder (``.../org___name/cfg/0.0.0/<sha>/``)."""
    for entry in getattr(dataset, "cache_files", None) or []:
        name = Path(entry.get("filename", "")).parent.name
        if re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    return None
