"""Which adapters one chat loads: several runs on one base model, each under a name the user knows.

``resolve_adapters`` turns the runs given to ``lora-tui chat RUN_A RUN_B ...`` into named
``AdapterSource``s and refuses, in one line, runs whose base models differ (one chat loads one
base). Names are the run directory names, made unique; "base" is kept for the base model alone.
``runs_sharing_base`` lists the runs of a folder whose adapter could join a chat.

Must not import torch / transformers / peft, print, or import textual: the CLI checks the runs
with it before torch loads, and the wizard imports it at start-up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lora_tui.core.model.embedded import converted_dir, is_embedded
from lora_tui.core.model.models import model_kind
from lora_tui.core.run.adapters import AdapterError, AdapterSource, find_adapter
from lora_tui.core.run.runs import list_runs

BASE = "base"  # the base model alone, as a name on the command line and in the wizard


class ChatError(AdapterError):
    """Chat cannot start or continue; the message says why and how to fix it."""


def base_key(source: AdapterSource) -> tuple[str, str | None, str]:
    """What must be equal for two adapters to share one loaded base: the model, its revision, how it is loaded."""
    name = str(source.base_model)
    if is_embedded(name):
        model = "embedded"
    elif model_kind(name) == "local":
        model = os.path.realpath(os.path.expanduser(name))
        if model == os.path.realpath(converted_dir()):
            model = "embedded"
    else:
        model = name
    return model, source.revision, source.load_in


def describe_base(source: AdapterSource) -> str:
    revision = f"@{source.revision}" if source.revision else ""
    return f"{source.base_model}{revision} ({source.load_in})"


def adapter_label(source: AdapterSource) -> str:
    """The name a user knows an adapter by: its run's folder name (a checkpoint adds its own name)."""
    if source.run is not None:
        given = source.adapter_dir
        if given is not None and given != source.run.adapter_dir and not source.note:
            return f"{source.run.name}-{given.name}"  # a checkpoint asked for by path
        return source.run.name
    if source.adapter_dir is None:
        return BASE
    folder = source.adapter_dir
    return folder.parent.name if folder.name == "adapter" and folder.parent.name else folder.name


def unique_name(label: str, taken) -> str:
    name = re.sub(r"\s+", "-", label.strip()) or "adapter"
    if name not in taken and name != BASE:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def check_same_base(first: AdapterSource, other: AdapterSource, other_given: str) -> None:
    if base_key(first) != base_key(other):
        where = first.run.path if first.run else first.adapter_dir
        raise ChatError(f"{other_given} was trained on {describe_base(other)}, but {where} on "
                        f"{describe_base(first)}: one chat loads one base model. "
                        "Fix: chat with runs trained on the same base (and quantisation), or chat with each apart.")


def resolve_adapters(runs: list[str | Path], *, require_adapter: bool = True
                     ) -> tuple[AdapterSource, dict[str, AdapterSource]]:
    """(the first run's source, which names how the base loads; the named adapters in the order given).

    The first adapter is the default answerer. With ``require_adapter=False`` one run without an
    adapter yet gives no adapters (the base model alone answers). Raises AdapterError / ChatError."""
    if not runs:
        raise ChatError("Name at least one run to chat with.")
    first = find_adapter(runs[0], require_adapter=require_adapter or len(runs) > 1)
    adapters: dict[str, AdapterSource] = {}
    seen: set[str] = set()
    for run in runs:
        source = first if not adapters and run is runs[0] else find_adapter(run)
        check_same_base(first, source, str(run))
        if source.adapter_dir is None:
            continue
        folder = str(source.adapter_dir.resolve())
        if folder not in seen:  # the same adapter twice (a run name and its path) loads once
            seen.add(folder)
            adapters[unique_name(adapter_label(source), adapters)] = source
    return first, adapters


def runs_sharing_base(folder: str | Path, like: AdapterSource, exclude: list[Path] = ()) -> list[tuple[str, Path]]:
    """(name, path) of the runs in ``folder`` with a final adapter (finished, or stopped: a stop saves it)
    that fits the base ``like`` was loaded on; a run training, dead or failed has none to trust."""
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for summary in list_runs(folder):
        if summary.state not in ("finished", "stopped") or Path(summary.path).resolve() in skip:
            continue
        try:
            source = find_adapter(summary.path, allow_checkpoint=False)
        except AdapterError:
            continue  # its adapter was deleted: nothing to add
        if source.adapter_dir is not None and base_key(source) == base_key(like):
            found.append((summary.name, Path(summary.path)))
    return sorted(found)
