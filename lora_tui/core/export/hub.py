"""The Hugging Face Hub side of a run: a portable base-model reference in the adapter, and `push`.

- ``make_adapter_portable``: rewrite ``adapter_config.json`` to name the base by its hub id
  (``lora_tui.core.model.hub_ids.portable_base``), so the adapter loads on any machine.
- ``upload_plan`` / ``push_run``: upload the adapter with its model card, or the merged model,
  or the GGUF file(s), through ``huggingface_hub``. The token comes from HF_TOKEN or the hub
  client's login (``huggingface_hub.get_token``) and is handed to nothing but the hub client:
  never written to a file, an event, a log or a card, never printed.

Must not: print, import torch / transformers at module top, or write into the run directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lora_tui.core.export.artefacts import export_summary, is_trainer_state
from lora_tui.core.model.hub_ids import portable_base
from lora_tui.core.model.models import hub_reachable
from lora_tui.core.run.adapters import AdapterError


class PushError(RuntimeError):
    """Nothing was uploaded; the message says why in one line."""


def make_adapter_portable(adapter_dir: str | Path, model_name: str) -> str:
    """Rewrite adapter_config.json's base_model_name_or_path (PEFT writes the local load path there)."""
    path = Path(adapter_dir) / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = portable_base(model_name)[0]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return data["base_model_name_or_path"]


def token_source() -> str:
    """Where the hub client will find a token, in words (never the token itself)."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "HF_TOKEN from the environment"
    try:
        from huggingface_hub import get_token

        return "the hub client's login (`hf auth login`)" if get_token() else "none"
    except Exception:
        return "none"


@dataclass
class UploadPlan:
    repo_id: str
    kind: str  # adapter | merged | gguf
    files: list[tuple[Path, str]] = field(default_factory=list)  # (local file, path in the repo)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p, _ in self.files)


def _folder_files(folder: Path) -> list[tuple[Path, str]]:
    return [(p, p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def upload_plan(run: str | Path, repo_id: str, kind: str = "adapter") -> UploadPlan:
    """What `push` would send: the adapter, or the recorded files of a pushable export format
    (``formats.pushable()``: the latest merged model, the GGUF files). Raises PushError when it does not exist yet."""
    from lora_tui.core.export.formats import export_format

    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"'{repo_id}' is not a hub repository id. Fix: give NAMESPACE/NAME, e.g. your-name/my-adapter.")
    try:
        summary = export_summary(run)
    except AdapterError as exc:
        raise PushError(str(exc)) from None
    if kind != "adapter":
        fmt = export_format(kind)
        items = summary.get(kind) or []
        if not items:
            how = f"lora-tui export {run} {fmt.flag}" if fmt.flag else f"lora-tui {'merge' if kind == 'merged' else 'export'} {run} OUT"
            raise PushError(f"this run has no {fmt.label} yet. Fix: {how}, then push again.")
        if Path(items[-1]["path"]).is_dir():  # a folder (the merged model): the latest one, whole
            return UploadPlan(repo_id, kind, _folder_files(Path(items[-1]["path"])))
        files: list[tuple[Path, str]] = []
        for item in items:
            files.append((Path(item["path"]), Path(item["path"]).name))
            if item.get("modelfile") and Path(item["modelfile"]).is_file():
                files.append((Path(item["modelfile"]), Path(item["modelfile"]).name))
        card = Path(items[-1]["path"]).parent / "README.md"
        if card.is_file():
            files.append((card, "README.md"))
        return UploadPlan(repo_id, kind, files)
    if not summary["adapter"]:
        raise PushError(f"this run has no adapter yet (state: {summary['state']}). Fix: wait for it to finish, or stop it.")
    # a checkpoint given as RUN: its resume state stays home
    return UploadPlan(repo_id, "adapter", [f for f in _folder_files(Path(summary["adapter"]))
                                           if not is_trainer_state(f[0].name)])


def push_run(plan: UploadPlan, *, private: bool = False) -> str:
    """Create the repository (if needed) and upload the plan's files in one commit. Returns the repo URL."""
    if not hub_reachable():
        raise PushError("cannot reach the Hugging Face Hub from here (no network); nothing was uploaded.")
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()  # finds HF_TOKEN or the login itself: we never hold the token
    try:
        url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for path, name in plan.files]
        api.create_commit(plan.repo_id, operations=operations, repo_type="model",
                          commit_message=f"Upload {plan.kind} with lora-tui")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise PushError(f"the hub refused the upload to {plan.repo_id} (HTTP {status}). Fix: set HF_TOKEN to a "
                            "token with write access, or run `hf auth login`.") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PushError(f"the hub refused the upload: {first}") from None
    except OSError as exc:
        raise PushError(f"the upload failed (network): {exc.strerror or exc}") from None
    return str(url)
