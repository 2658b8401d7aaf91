"""Finding a trained adapter: a run directory, a run name, or a bare PEFT adapter directory,
resolved to where the adapter is and how its base model must be loaded.

Shared by chat, export and push. Must not import torch / transformers / peft or print.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lora_tui.core.config import ConfigError, load_config
from lora_tui.core.model.hub_ids import local_base
from lora_tui.core.run.runs import STATES_DONE, RunDirectory, RunError, quoted


class AdapterError(RuntimeError):
    """No usable adapter at the given place; the message says why and how to fix it."""


@dataclass
class AdapterSource:
    """Where an adapter is and how its base model must be loaded."""

    adapter_dir: Path | None
    run: RunDirectory | None
    base_model: str
    load_in: str = "16bit"
    double_quant: bool = True
    trust_remote_code: bool = False
    revision: str | None = None
    template: str = "auto"
    note: str = ""  # e.g. "checkpoint-40: the final adapter is not saved yet"


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


ADAPTER_CONFIG_BYTES = 2**20  # a PEFT adapter_config.json is a few KiB


def read_adapter_config(adapter_dir: Path) -> dict:
    """adapter_config.json as a dict, read to at most ADAPTER_CONFIG_BYTES (PEFT reads it whole: a 1 GB file
    took 2.5 GB and ended in "'peft_type'"); AdapterError (one line) when it is not a PEFT adapter's config."""
    from lora_tui.core.safe_read import clip, read_bounded

    path = adapter_dir / "adapter_config.json"
    try:
        data = json.loads(read_bounded(path, ADAPTER_CONFIG_BYTES, "an adapter_config.json", "re-save the adapter"))
    except OSError as exc:  # UnsafeFile: the message names the path, the reason and the fix
        raise AdapterError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise AdapterError(f"{path} cannot be read ({clip(str(exc))}). Fix: re-save the adapter.") from None
    if not isinstance(data, dict) or not isinstance(data.get("peft_type"), str):
        raise AdapterError(f"{path} is not a PEFT adapter's config (no peft_type). Fix: re-save the adapter, or "
                           "point at the run directory.")
    return data


def _base_from_adapter_config(adapter_dir: Path) -> str:
    data = read_adapter_config(adapter_dir)
    base = data.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{adapter_dir / 'adapter_config.json'} does not name its base model "
                        "(base_model_name_or_path). Fix: give the run directory instead of the adapter.")
    return local_base(str(base))  # the embedded model's hub id -> its offline copy here


def _run_owning(adapter_dir: Path) -> RunDirectory | None:
    """The run an adapter (or checkpoint) directory belongs to, if any."""
    for parent in (adapter_dir.parent, adapter_dir.parent.parent):
        if (parent / "config.yaml").is_file():
            return RunDirectory(parent)
    return None


def missing_final_adapter(run_dir: RunDirectory) -> str:
    """What is missing in a run that has ended without a usable adapter/ (deleted, or killed before saving)."""
    state = run_dir.state()
    where = run_dir.adapter_dir
    what = ("holds no adapter_config.json" if where.exists() else "is missing")
    what += " (deleted?)" if state == "finished" else " (the run ended before saving it)"
    checkpoint = next((c for c in reversed(run_dir.complete_checkpoints()) if _is_adapter_dir(c)), None)
    fix = (f"use its last checkpoint explicitly ({checkpoint})" if checkpoint is not None
           else f"train again (`lora-tui train {quoted(run_dir.config_path)} --run-dir NEW_DIR`)")
    return f"Run {run_dir.path} has no adapter yet to use (state: {state}): its adapter folder {where} {what}. Fix: {fix}."


def _final_adapter_expected(run_dir: RunDirectory, require_adapter: bool, allow_checkpoint: bool) -> bool:
    """A finished run always saved adapter/; an ended one has no later adapter to wait for (exports)."""
    state = run_dir.state()
    if state == "finished":
        return require_adapter
    return state in STATES_DONE and require_adapter and not allow_checkpoint


def find_adapter(run: str | Path, *, require_adapter: bool = True, allow_checkpoint: bool = True) -> AdapterSource:
    """Resolve a run directory, run name or adapter directory to an AdapterSource.

    A run still training has no ``adapter/`` yet: its newest complete checkpoint is used
    when ``allow_checkpoint`` (chat), never for exports."""
    path = Path(run).expanduser()
    adapter_dir: Path | None = None
    note = ""
    if _is_adapter_dir(path):
        adapter_dir = path
        run_dir = _run_owning(path)
        if run_dir is None:
            return AdapterSource(adapter_dir, None, _base_from_adapter_config(path))
    else:
        try:
            run_dir = RunDirectory.find(run)
        except RunError as exc:
            raise AdapterError(str(exc)) from None
        if _is_adapter_dir(run_dir.adapter_dir):
            adapter_dir = run_dir.adapter_dir
        elif _final_adapter_expected(run_dir, require_adapter, allow_checkpoint):
            raise AdapterError(missing_final_adapter(run_dir))
        else:
            checkpoints = run_dir.complete_checkpoints() if allow_checkpoint else []
            checkpoint = next((c for c in reversed(checkpoints) if _is_adapter_dir(c)), None)
            if checkpoint is not None:
                adapter_dir, note = checkpoint, f"{checkpoint.name}: the final adapter is not saved yet"
            elif require_adapter:
                status = run_dir.read_status()
                where = f", step {status['step']}/{status.get('max_steps')}" if status.get("step") else ""
                wait = "its first checkpoint or its end" if allow_checkpoint else "the run to finish, or stop it"
                raise AdapterError(f"Run {run_dir.path} has no adapter yet (state: {run_dir.state()}{where}). Fix: wait for "
                                f"{wait} (`lora-tui attach {quoted(run_dir.path)}`)"
                                + (", or chat with the base model alone (--no-adapter)." if allow_checkpoint else "."))
    try:
        config = load_config(run_dir.config_path)
    except ConfigError as exc:
        raise AdapterError(str(exc)) from None
    if adapter_dir is not None:
        read_adapter_config(adapter_dir)  # before PEFT reads it whole
    return AdapterSource(adapter_dir, run_dir, config.model.name, config.model.load_in, config.model.double_quant,
                         config.model.trust_remote_code, config.model.revision, config.data.template, note)
