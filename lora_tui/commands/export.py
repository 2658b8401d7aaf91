"""`lora-tui export RUN [--zip] [--gguf [--gguf-type T]] [--gguf-adapter] [--out]` and `lora-tui merge RUN OUT [--dtype]`.

Front-end only: the formats and their flags come from lora_tui.core.export.formats, the work from
lora_tui.core.export (artefacts, check). Every merged model or GGUF written is loaded back and checked
(unless --no-check); the check exits 1 only when the file loses the fine-tune or its template, stop
token or taught end-of-turn differ (lora_tui.core.export.gain). Foreseeable problems print one line and exit 2; nothing is
overwritten without --overwrite.
"""

from __future__ import annotations

import sys

from pathlib import Path

from lora_tui.core.run.adapters import AdapterError, find_adapter, missing_final_adapter
from lora_tui.core.run.runs import STATES_DONE, RunDirectory, quoted
from lora_tui.core.export.artefacts import export_summary, merge_adapter
from lora_tui.core.export.formats import DEFAULT_GGUF_TYPE, EXPORT_FORMATS
from lora_tui.core.units import human_size


def _error(command: str, message: str) -> int:
    print(f"lora-tui {command}: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    if args.command == "merge":
        return _merge(args)
    return _export(args)


def _progress(message: str, fraction: float) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def check_export(command: str, args, artefact: Path, gguf_file: str | None = None, lora: Path | None = None) -> int:
    """Load the export back, print the answers side by side and the verdict table; 0 when it keeps the fine-tune
    (or, when training changed too little to judge, moves as its type normally does), 1 when not."""
    from lora_tui.core.export.artefacts import record_check
    from lora_tui.core.export.check import THRESHOLDS, verify_export

    if getattr(args, "no_check", False):
        print("Check:       skipped (--no-check)")
        return 0
    try:
        result = verify_export(args.run, artefact, gguf_file=gguf_file, check_prompts=args.check_prompts,
                               runtime=getattr(args, "check_runtime", "auto"), lora=lora, on_progress=_progress)
    except (AdapterError, ValueError, OSError) as exc:
        print(f"lora-tui {command}: the export was written, but the round-trip check could not run: {exc}", file=sys.stderr)
        return 1
    print()
    print(result.table())
    print(f"Thresholds:  {THRESHOLDS}")
    print(f"Ran in:      {result.runtime}")
    for problem in result.problems:
        print(f"Problem:     {problem}")
    for note in result.notes:
        print(f"Note:        {note}")
    if result.template_note:
        print(f"Template:    {result.template_note}")
    source = find_adapter(args.run, allow_checkpoint=False)
    if source.run is not None:
        record_check(source.run, str(lora or (artefact / gguf_file if gguf_file else artefact)), result.to_dict())
    if not result.ok:
        print(f"CHECK FAILED: {result.artefact}: {result.verdict_words if result.judgement else 'not judged'}"
              f"{'' if result.template_same else '; the chat template differs'}"
              f"{'' if result.eos_ok else '; the taught end-of-turn does not stop it'}. It was kept so you can inspect it.")
        return 1
    return 0


def _chosen(args) -> list:
    """The formats this `export` line asks for, in the table's order."""
    return [f for f in EXPORT_FORMATS if f.flag and getattr(args, f.flag.lstrip("-").replace("-", "_"), False)]


def _option(args, fmt) -> str | None:
    return getattr(args, fmt.option_flag.lstrip("-").replace("-", "_")) if fmt.option_flag else None


def _export(args) -> int:
    from lora_tui.commands.chat import quiet_libraries

    chosen = _chosen(args)
    checked = [f for f in chosen if f.check]
    if checked and not args.no_check and (args.check_runtime == "llama.cpp" or any(f.llamacpp_only for f in checked)):
        from lora_tui.core.export.llamacpp import llamacpp_missing

        if llamacpp_missing():  # before minutes of merging and writing
            return _error("export", llamacpp_missing())
    written = []
    try:
        for fmt in chosen:  # --out goes to the last format asked for (the zip keeps its place beside a GGUF)
            if fmt.progress:
                quiet_libraries()
            out = args.out if fmt is chosen[-1] else None
            written.append((fmt, fmt.write(args.run, out, option=_option(args, fmt), overwrite=args.overwrite,
                                           on_progress=_progress)))
        summary = export_summary(args.run)
    except AdapterError as exc:  # ExportError included
        return _error("export", str(exc))
    if args.out and not chosen:
        print(f"(--out only matters with {' or '.join(f.flag for f in EXPORT_FORMATS if f.flag)})", file=sys.stderr)
    print(f"Run:         {summary['run'] or summary['name']} ({summary['state']})")
    print(f"Base model:  {summary['base_model']}")
    if not summary["adapter"]:
        run_dir = RunDirectory(summary["run"]) if summary["run"] else None
        if run_dir is not None and run_dir.state() in STATES_DONE + ("dead",):  # it will not appear any more
            print(f"Adapter:     missing. {missing_final_adapter(run_dir)}")
        else:
            print("Adapter:     not saved yet. It appears when the run finishes or is stopped.")
        return 0
    print(f"Adapter:     {summary['adapter']}  ({human_size(summary['adapter_bytes'])}: "
          f"{', '.join(summary['adapter_files'])})")
    print(f"Model card:  {summary['model_card'] or 'missing (written when the trainer saves the adapter)'}")
    zip_path = next((path for fmt, path in written if fmt.name == "zip"), None)
    if zip_path is not None:
        print(f"Zip:         {zip_path}  ({human_size(zip_path.stat().st_size)}) written")
    elif summary["zip"]:
        print(f"Zip:         {summary['zip']}  ({human_size(summary['zip_bytes'])})")
    else:
        print(f"Zip:         none yet (lora-tui export {quoted(args.run)} --zip)")
    for merged in summary["merged"]:
        verdict = f", check: {merged['check']['verdict']}" if merged.get("check") else ""
        print(f"Merged:      {merged['path']}  ({human_size(merged['bytes'])}, {merged['dtype']}{verdict})")
    if not summary["merged"]:
        print(f"Merged:      none yet (lora-tui merge {quoted(args.run)} OUT)")
    for item in summary["gguf"]:
        verdict = f", check: {item['check']['verdict']}" if item.get("check") else ""
        print(f"GGUF:        {item['path']}  ({human_size(item['bytes'])}, {item['type']}{verdict})")
    if not summary["gguf"]:
        print(f"GGUF:        none yet (lora-tui export {quoted(args.run)} --gguf [--gguf-type {DEFAULT_GGUF_TYPE}])")
    for item in summary.get("gguf_adapter") or []:
        verdict = f", check: {item['check']['verdict']}" if item.get("check") else ""
        print(f"LoRA GGUF:   {item['path']}  ({human_size(item['bytes'])}, on {item['type']} base {item['base']}{verdict})")
    print(f"Load it:     PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), \"{summary['adapter']}\")")
    status = 0
    for info in (result for fmt, result in written if fmt.name == "gguf_adapter"):
        print(f"Written:     {info.path}  ({human_size(info.path.stat().st_size)}, LoRA adapter)")
        print(f"  base:      {info.base_path}  ({human_size(info.base_path.stat().st_size)}, {info.base_type}, "
              f"{'reused: written for an earlier adapter of this base' if info.base_reused else 'written once, shared by every adapter of this base'})")
        print(f"  llama.cpp: llama-cli -m {quoted(info.base_path)} --lora {quoted(info.path)}")
        print(f"  Ollama:    {ollama_create(info.path.parent, info.path.stem, info.modelfile.name)}")
    for fmt, path in written:
        if fmt.name == "gguf":
            modelfile = path.with_name(f"Modelfile-{_option(args, fmt)}")
            print(f"Written:     {path}  ({human_size(path.stat().st_size)})")
            print(f"  llama.cpp: llama-cli -m {quoted(path)}")
            print(f"  Ollama:    {ollama_create(path.parent, path.stem, modelfile.name)}")
        if fmt.check:
            artefact, gguf_file, lora = fmt.check_target(path)
            status = max(status, check_export("export", args, artefact, gguf_file, lora=lora))
    return status


def ollama_create(folder: Path, name: str, modelfile: str) -> str:
    """The `cd FOLDER && ollama create NAME -f MODELFILE` line, safe to paste: every path shell-quoted, and the
    model name as Ollama takes one (letters, digits, `.`, `_`, `-`, starting with a letter or digit)."""
    import re

    model = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).lstrip("-._") or "my-model"
    return f"cd {quoted(folder)} && ollama create {model} -f {quoted(modelfile)}"


def _merge(args) -> int:
    from lora_tui.commands.chat import quiet_libraries

    quiet_libraries()
    try:
        out = merge_adapter(args.run, args.out, dtype=args.dtype, overwrite=args.overwrite,
                            on_progress=lambda message, fraction: print(f"  {message}", file=sys.stderr))
    except AdapterError as exc:  # ExportError included
        return _error("merge", str(exc))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"Merged model: {out} ({human_size(size)})")
    print(f"  transformers: AutoModelForCausalLM.from_pretrained({str(out)!r})")
    print(f"  Ollama:       {ollama_create(out, out.name, 'Modelfile')}")
    print(f"  GGUF:         lora-tui export {quoted(args.run)} --gguf (or see {quoted(out / 'README.md')})")
    return check_export("merge", args, out)
