"""What a finished run hands on: the adapter as a zip, a standalone merged model, and a summary.

- ``zip_adapter``: the adapter folder (weights, tokenizer, chat template, model card) as one zip.
- ``merge_adapter``: the base model reloaded in 16/32-bit (even when training used 4-bit or
  8-bit), the adapter merged in, saved as plain safetensors + tokenizer + chat template, with
  an Ollama Modelfile and a note on GGUF conversion. Loads with AutoModelForCausalLM alone.
- ``export_gguf``: the merged model as one GGUF file (see ``gguf_export``) with an Ollama Modelfile.
- ``export_summary``: paths and sizes for the wizard's export screen and `lora-tui export`.
Round-trip checks of what is written live in ``export_check``.

Must not: overwrite anything without ``overwrite=True``, write into the run's adapter (but for its model
card, re-rendered by run/model_card with each check's figures) or the base model's folder, print, or import torch / transformers / peft at module top.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

from lora_tui.core.data.template import apply_training_template
from lora_tui.core.export.check import learned_end_token
from lora_tui.core.export.choices import DEFAULT_GGUF_TYPE, GGUF_TYPES, MERGE_DTYPES
from lora_tui.core.export.gguf import GGUFExportError, gguf_architecture, write_gguf
from lora_tui.core.export.gguf_kquant import KQUANT_TYPES, kquant_missing
from lora_tui.core.export.modelfile import format_for, modelfile_text, write_modelfile  # noqa: F401  (public here too, as documented)
from lora_tui.core.model.hub_ids import portable_base
from lora_tui.core.model.models import ModelSourceError, load_base_model, load_model_config, load_tokenizer, resolve_model_path
from lora_tui.core.run.adapters import AdapterError, find_adapter
from lora_tui.core.run.runs import CHECKPOINT_MARKER, RunDirectory

Progress = Callable[[str, float], None]
EXPORTS_FILE = "exports.json"  # in the run directory: merged models written from this run


class ExportError(AdapterError):
    """An export cannot be written; the message says why and how to fix it."""


def _final_adapter(run):
    """The run's saved adapter; a checkpoint of a run still training is not something to ship."""
    return find_adapter(run, allow_checkpoint=False)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _export_name(source) -> str:
    """The run's name; an adapter folder given by path that is not the run's final adapter/ (a checkpoint)
    adds its own name, so its exports never take the final adapter's file names. As a file name: letters,
    digits, `.`, `_`, `-` only, never a leading `-` (a run named with a newline put a line into the Modelfile;
    one named `-rf` gave hints that read as options)."""
    if source.run is None:
        name = source.adapter_dir.name
    elif source.adapter_dir is not None and source.adapter_dir.resolve() != source.run.adapter_dir.resolve():
        name = f"{source.run.name}-{source.adapter_dir.name}"
    else:
        name = source.run.name
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("-.") or "adapter"


def default_zip_path(source) -> Path:
    if source.run is not None:
        return source.run.path / f"{_export_name(source)}-adapter.zip"
    return source.adapter_dir.with_name(f"{source.adapter_dir.name}.zip")


def _disk_full_is_an_export_error(write):
    """A full disk while an export is written: one line (where, how much is free, the fix), not a traceback;
    the writers already remove their partial files."""
    import functools

    @functools.wraps(write)
    def guarded(run, out=None, *args, **kwargs):
        try:
            return write(run, out, *args, **kwargs)
        except Exception as exc:
            from lora_tui.core.disk import free_bytes, is_disk_full

            if isinstance(exc, AdapterError) or not is_disk_full(exc):
                raise
            where = Path(str(out)).expanduser() if out else Path(str(run)).expanduser()
            folder = next((p for p in (where, *where.parents) if p.is_dir()), Path("."))
            try:
                free = f", {free_bytes(folder) / 2**20:,.0f} MiB free at {folder}"
            except OSError:
                free = ""
            raise ExportError(f"disk full while writing {where}{free}; nothing half-written was kept. Fix: free space "
                              "there, or write to a disk with room (--out, or merge's OUT).") from None
    return guarded


@_disk_full_is_an_export_error
def zip_adapter(run: str | Path, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Zip the adapter folder; default <run>/<run-name>-adapter.zip. Returns the zip's path."""
    source = _final_adapter(run)
    target = Path(out).expanduser() if out else default_zip_path(source)
    if target.is_dir():
        target = target / default_zip_path(source).name
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists. Fix: pass --overwrite to replace it, or --out to write elsewhere.")
    if target.exists() and not zipfile.is_zipfile(target):  # --overwrite replaces a zip, never another file
        raise ExportError(f"{target} is not a zip file: it was not touched. Fix: --out a new file name (.zip).")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = default_zip_path(source).stem  # unzips into one folder, not loose files
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(source.adapter_dir.rglob("*")):
                if path.is_file() and not path.name.startswith(".") and not is_trainer_state(path.name):
                    archive.write(path, f"{folder}/{path.relative_to(source.adapter_dir).as_posix()}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# What a checkpoint holds besides the adapter: resuming state, useless (and large) in a shipped adapter.
TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin",
                 "trainer_state.json", "*.pt", "*.pth", CHECKPOINT_MARKER)


def is_trainer_state(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TRAINER_STATE)


def _auto_dtype(model_path: str) -> str:
    """The dtype the base model was published in (config.json), float32 when it does not say."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return dtype if dtype in MERGE_DTYPES[1:] else "float32"


def _check_out(out: Path, protected: list[Path], overwrite: bool, home: Path | None = None) -> None:
    """Refuse an output folder that overlaps ``protected`` (adapter, checkpoints, base model) or is, or holds,
    ``home``: the run folder, which may hold the merged model (as it holds the zip and gguf/) but is never it."""
    if home is not None and (out == home.resolve() or out in home.resolve().parents):
        raise ExportError(f"{out} is the run folder (or holds it), which must not be touched. "
                          f"Fix: choose a folder inside it, such as {home.resolve() / 'merged'}, or a separate one.")
    for keep in protected:
        keep = keep.resolve()
        if out == keep or out in keep.parents or keep in out.parents:
            raise ExportError(f"{out} overlaps {keep}, which must not be touched. Fix: choose a separate folder.")
    if out.is_file():
        raise ExportError(f"{out} is a file. Fix: give a folder for the merged model.")
    if out.is_dir() and any(out.iterdir()):
        foreign = _not_merged_files(out)
        if foreign:  # --overwrite replaces a merged model we wrote, never someone's folder
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ExportError(f"{out} is not empty and not a merged model (it holds {shown}): nothing there was "
                              "touched. Fix: choose a new or empty folder for the merged model.")
        if not overwrite:
            raise ExportError(f"{out} already exists and is not empty. Fix: choose a new folder, or pass --overwrite.")


# What merge_adapter writes (plus the GGUF file its README suggests): only a folder holding nothing else is replaced.
MERGED_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*",
                "special_tokens_map.json", "added_tokens.json", "chat_template*", "vocab*", "merges.txt",
                "spiece.model", "Modelfile*", "README.md", "*.gguf")


def _not_merged_files(folder: Path) -> list[str]:
    """Entries of ``folder`` that a merged model does not hold (all of them when it has no config.json)."""
    import fnmatch

    entries = sorted(folder.iterdir())
    if not (folder / "config.json").is_file():
        return [e.name + ("/" if e.is_dir() else "") for e in entries]
    return [e.name + ("/" if e.is_dir() else "") for e in entries
            if e.is_dir() or not any(fnmatch.fnmatchcase(e.name, pattern) for pattern in MERGED_FILES)]


GGUF_NOTE = """
## GGUF (llama.cpp, Ollama, LM Studio)

`lora-tui export RUN --gguf --gguf-type q8_0` (or f16, q4_0; q4_k_m, q5_k_m, q6_k with
`pip install "lora-tui[gguf-kquant]"`) writes one GGUF file with the tokenizer, chat template and end-of-turn
token, and checks it answers like the adapter. For architectures the built-in export does not cover, llama.cpp
converts this folder:

```bash
git clone https://github.com/ggml-org/llama.cpp && pip install -r llama.cpp/requirements.txt
python llama.cpp/convert_hf_to_gguf.py {out} --outfile {out}/model.gguf --outtype q8_0
```

## Ollama

`Modelfile` holds a TEMPLATE that matches the chat template used in training, and its stop tokens.
`FROM .` imports this safetensors folder directly; the GGUF export writes its own `Modelfile-<type>` with `FROM ./<file>.gguf`.

```bash
cd {out} && ollama create {name} -f Modelfile && ollama run {name}
```
"""


def _write_merged_readme(out: Path, final: Path, source, dtype: str) -> None:
    base = source.base_model
    text = (f"# {final.name}\n\nA standalone model: `{base}` with the LoRA adapter from "
            f"`{source.adapter_dir}` merged into its weights ({dtype}). Load it with plain transformers:\n\n"
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{final}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{final}")  # with the chat template used in training\n```\n'
            + GGUF_NOTE.format(out=final, name=final.name.lower().replace(" ", "-") or "my-model"))
    (out / "README.md").write_text(text, encoding="utf-8")


def load_merged(source, dtype: str = "float32", on_progress: Progress | None = None):
    """(merged model, tokenizer carrying the training template, base path), all in memory."""
    report = on_progress or (lambda message, fraction: None)

    try:
        base_path = resolve_model_path(source.base_model, on_progress)
    except ModelSourceError as exc:
        raise ExportError(str(exc)) from None
    dtype = _auto_dtype(base_path) if dtype == "auto" else dtype
    precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    report(f"Loading {source.base_model} in {dtype} (not quantised, so the merge is exact)", 0.1)
    try:
        # Merging into 4-bit weights would round the update away: always a 16/32-bit base.
        model = load_base_model(source.base_model, load_in="16bit", precision=precision, device="cpu",
                                trust_remote_code=source.trust_remote_code, revision=source.revision)
        if (source.adapter_dir / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(source.adapter_dir, trust_remote_code=source.trust_remote_code)
        else:
            tokenizer = load_tokenizer(source.base_model, source.trust_remote_code, source.revision)
    except ModelSourceError as exc:
        raise ExportError(str(exc)) from None
    report("Applying and merging the adapter", 0.5)
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(source.adapter_dir)).merge_and_unload(safe_merge=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"The adapter in {source.adapter_dir} cannot be merged into {source.base_model}: {first}") from None
    apply_training_template(tokenizer, source.template)  # a fallback format travels with the model too
    return model, tokenizer, base_path


@_disk_full_is_an_export_error
def merge_adapter(run: str | Path, out: str | Path, *, dtype: str = "auto", overwrite: bool = False,
                  on_progress: Progress | None = None) -> Path:
    """Write base + adapter as one model folder; returns it."""
    report = on_progress or (lambda message, fraction: None)
    if dtype not in MERGE_DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(MERGE_DTYPES)}, not '{dtype}'.")
    source = _final_adapter(run)

    try:
        base_path = resolve_model_path(source.base_model, on_progress)
    except ModelSourceError as exc:
        raise ExportError(str(exc)) from None
    final = Path(out).expanduser().resolve()
    # Inside the run folder is fine (default_merged_path), beside its zip and gguf/; its own files are not.
    protected = [source.adapter_dir] + ([source.run.adapter_dir, source.run.checkpoints_dir] if source.run else [])
    protected += [Path(base_path)] if Path(base_path).is_dir() else []
    _check_out(final, protected, overwrite, home=source.run.path if source.run else None)
    dtype = _auto_dtype(base_path) if dtype == "auto" else dtype
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model, tokenizer, _ = load_merged(source, dtype, on_progress)
        report(f"Writing {final}", 0.7)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        _stop_on_learned_eos(tmp, tokenizer, source.template)
        tokenizer.save_pretrained(tmp)
        write_modelfile(tmp, tokenizer)
        _write_merged_readme(tmp, final, source, dtype)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if source.run is not None:
        _record_export(source.run, "merged", {"path": str(final), "dtype": dtype})
    report(f"Merged model ready: {final}", 1.0)
    return final


def _stop_on_learned_eos(folder: Path, tokenizer, template: str) -> None:
    """Make the end-of-turn token training taught a stop token of generation_config.json."""
    path = folder / "generation_config.json"
    end = learned_end_token(tokenizer, template)
    if end is None:
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    current = data.get("eos_token_id")
    ids = [current] if isinstance(current, int) else list(current or [])
    if end not in ids:
        data["eos_token_id"] = ids + [end] if ids else end
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def default_merged_path(run: str | Path) -> Path:
    """Where a merge goes unless told: ``<run>/merged``, beside the run's zip and gguf/ (merge_adapter accepts it)."""
    return Path(run) / "merged"


def default_gguf_path(source, gguf_type: str) -> Path:
    name = _export_name(source)
    folder = source.run.path / "gguf" if source.run is not None else source.adapter_dir.parent / f"{name}-gguf"
    return folder / f"{name}-{gguf_type}.gguf"


@_disk_full_is_an_export_error
def export_gguf(run: str | Path, out: str | Path | None = None, *, gguf_type: str = DEFAULT_GGUF_TYPE, overwrite: bool = False,
                on_progress: Progress | None = None) -> Path:
    """Merge the adapter and write one GGUF file (tokenizer, chat template, EOS inside) plus a Modelfile."""
    import tempfile

    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"--gguf-type must be one of {', '.join(GGUF_TYPES)}, not '{gguf_type}'.")
    if gguf_type in KQUANT_TYPES and kquant_missing():  # before minutes of loading and merging
        raise ExportError(kquant_missing())
    source = _final_adapter(run)
    target = Path(out).expanduser() if out else default_gguf_path(source, gguf_type)
    if target.is_dir() or not target.suffix:
        target = target / default_gguf_path(source, gguf_type).name
    target = target.resolve()
    if any(ord(c) < 32 or ord(c) == 127 for c in target.name):  # it is named on the Modelfile's FROM line
        raise ExportError(f"{target.name!r} holds a control character (a newline?), which a Modelfile cannot name. "
                          "Fix: --out a plain file name (.gguf).")
    modelfile = target.with_name(f"Modelfile-{gguf_type}")
    # Every file the export writes follows the rule, not only the GGUF (Modelfile-q8_0 was replaced silently).
    _may_replace(target, overwrite, _is_gguf, "a GGUF file", "--out a new file name (.gguf)")
    _may_replace(modelfile, overwrite, _is_our_modelfile, "a Modelfile lora-tui wrote", "--out another folder")

    try:
        gguf_architecture(load_model_config(source.base_model, source.trust_remote_code, source.revision))
    except GGUFExportError as exc:  # before minutes of loading and merging
        raise ExportError(str(exc)) from None
    except ModelSourceError as exc:
        raise ExportError(str(exc)) from None
    model, tokenizer, base_path = load_merged(source, "float32", on_progress)
    with tempfile.TemporaryDirectory(prefix="lora-tui-gguf-") as tmp:
        tokenizer.save_pretrained(tmp)
        spm = Path(base_path) / "tokenizer.model"
        if spm.is_file() and not (Path(tmp) / "tokenizer.model").exists():
            shutil.copy(spm, Path(tmp) / "tokenizer.model")  # exact SentencePiece scores (Llama 2, Mistral)
        try:
            info = write_gguf(model, tokenizer, tmp, target, gguf_type=gguf_type,
                              name=source.run.name if source.run else target.stem,
                              eos_token_id=learned_end_token(tokenizer, source.template), on_progress=on_progress)
        except GGUFExportError as exc:
            raise ExportError(str(exc)) from None
    _write_replacing(modelfile, modelfile_text(format_for(tokenizer, "auto"), source=f"./{target.name}"))
    _write_gguf_card(target.parent, source, info)
    if source.run is not None:
        _record_export(source.run, "gguf", {"path": str(target), "type": gguf_type, "modelfile": str(modelfile),
                                             "eos": info.eos_token, "notes": info.notes})
    return target


def _may_replace(path: Path, overwrite: bool, ours: Callable[[Path], bool], what: str, fix: str) -> None:
    """The no-overwrite rule for one file an export writes: absent, or --overwrite and a file of ours."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ExportError(f"{path} already exists. Fix: pass --overwrite to replace it, or --out to write elsewhere.")
    if path.is_symlink() or not path.is_file() or not ours(path):  # what lora-tui wrote, never another file
        raise ExportError(f"{path} is not {what}: it was not touched. Fix: {fix}.")


def _is_our_modelfile(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(40).startswith(b"# Ollama Modelfile written by lora-tui")
    except OSError:
        return False


def _write_replacing(path: Path, text: str) -> None:
    """Write a small text file through a temporary name: a full disk leaves the old one, never half a new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def _write_gguf_card(folder: Path, source, info) -> None:
    """README.md beside the GGUF files (the hub shows it when the folder is pushed with `push --gguf`);
    a README.md that lora-tui did not write (--out into someone's folder) is left as it is."""
    readme = folder / "README.md"
    try:
        if readme.exists() and "written by lora-tui" not in readme.read_text(encoding="utf-8", errors="replace")[:4096]:
            return
    except OSError:
        return
    from huggingface_hub import ModelCard, ModelCardData

    base, is_hub = portable_base(source.base_model)
    files = sorted(p.name for p in folder.glob("*.gguf"))
    data = ModelCardData(base_model=base if is_hub else None, tags=["gguf", "lora", "lora-tui", "llama.cpp"],
                         pipeline_tag="text-generation")
    name = source.run.name if source.run else folder.name
    body = [f"# {name} (GGUF)", "", f"`{base}` with the LoRA adapter `{name}` merged in, written by lora-tui with the "
            "`gguf` package. Each file holds the tokenizer, the chat template used in training and, as EOS, the "
            f"end-of-turn token the adapter learned (`{info.eos_token}`).", "", "| File |", "|---|",
            *[f"| `{f}` |" for f in files], "", "```bash", f"llama-cli -m {files[-1] if files else 'FILE.gguf'} -cnv",
            f"ollama create {name.lower()} -f Modelfile-{info.gguf_type}   # the Modelfile beside each file", "```", ""]
    (folder / "README.md").write_text(str(ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body))),
                                      encoding="utf-8")


def _record_export(run: RunDirectory, kind: str, item: dict) -> None:
    """Remember an export in <run>/exports.json (merged models and GGUF files live outside the adapter)."""
    path = run.path / EXPORTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    kept = [m for m in data.get(kind, []) if m.get("path") != item["path"]]
    kept.append({**item, "time": round(time.time(), 3)})
    data[kind] = kept
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def record_check(run: RunDirectory, artefact: str, check: dict) -> None:
    """Attach a round-trip check result to the recorded export (so the card and the Export screen can show it)."""
    path = run.path / EXPORTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    from lora_tui.core.export.gain import columns

    for kind in data:  # merged, gguf, gguf_adapter (the LoRA GGUF is recorded by its own path)
        for item in data.get(kind, []):
            if item.get("path") == artefact or artefact.startswith(item.get("path", "\0") + "/"):
                item["check"] = {k: check[k] for k in ("verdict", "verdict_words", "ok", "runtime", "gguf_type",
                                                       "judgement", "delta_loglik", "agreement", "template_same",
                                                       "tokens_same", "eos_ok", "learned_eos", "artefact_stops")
                                 if k in check}
                item["check"]["columns"] = columns(check)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    if (run.adapter_dir / "adapter_config.json").is_file():  # the card's Exports table shows the check
        from lora_tui.core.run.model_card import write_model_card
        from lora_tui.core.run.runs import RunError

        try:
            write_model_card(run)
        except (RunError, OSError):  # the export and its record stand; the card says what it said before
            pass


def export_summary(run: str | Path) -> dict:
    """Where this run's outputs are, with sizes. Never raises for a run without an adapter yet."""
    source = find_adapter(run, require_adapter=False, allow_checkpoint=False)
    adapter = source.adapter_dir
    summary: dict = {"run": str(source.run.path) if source.run else None,
                     "name": source.run.name if source.run else (adapter.name if adapter else None),
                     "state": source.run.state() if source.run else "finished",
                     "base_model": source.base_model, "adapter": None, "adapter_bytes": 0, "adapter_files": [],
                     "model_card": None, "zip": None, "zip_bytes": 0, "merged": [], "gguf": [], "gguf_adapter": []}
    if adapter is not None:
        summary.update(adapter=str(adapter), adapter_bytes=_size(adapter),
                       adapter_files=sorted(p.name for p in adapter.iterdir() if p.is_file() and not is_trainer_state(p.name)))
        card = adapter / "README.md"
        summary["model_card"] = str(card) if card.is_file() else None
        zip_path = default_zip_path(source)
        if zip_path.is_file():
            summary.update(zip=str(zip_path), zip_bytes=zip_path.stat().st_size)
    if source.run is not None:
        try:
            recorded = json.loads((source.run.path / EXPORTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        for item in recorded.get("merged", []):
            path = Path(item.get("path", ""))
            if (path / "config.json").is_file():  # deleted or moved merges are left out
                summary["merged"].append({"path": str(path), "dtype": item.get("dtype"), "bytes": _size(path),
                                          "check": item.get("check")})
        for item in recorded.get("gguf", []):
            path = Path(item.get("path", ""))
            if path.is_file():
                summary["gguf"].append({"path": str(path), "type": item.get("type"), "bytes": _size(path),
                                        "modelfile": item.get("modelfile"), "check": item.get("check")})
        for item in recorded.get("gguf_adapter", []):  # a LoRA GGUF and the shared base file it applies on
            path = Path(item.get("path", ""))
            if path.is_file():
                summary["gguf_adapter"].append({"path": str(path), "base": item.get("base"), "type": item.get("type"),
                                                "bytes": _size(path), "check": item.get("check")})
    return summary
