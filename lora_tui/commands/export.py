"""`lora-tui export RUN [--zip] [--gguf [--gguf-type T]] [--out]` and `lora-tui merge RUN OUT [--dtype]`.

Front-end only: the work is lora_tui.core.export.artefacts (and gguf_export, export_check). Every merged
model or GGUF written is loaded back and compared with the adapter (unless --no-check); a failed
check prints why and exits 1. Foreseeable problems print one line and exit 2; nothing is
overwritten without --overwrite.
"""

from __future__ import annotations

import sys

from pathlib import Path

from lora_tui.core.run.adapters import AdapterError, find_adapter
from lora_tui.core.export.artefacts import export_gguf, export_summary, merge_adapter, zip_adapter
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


def check_export(command: str, args, artefact: Path, gguf_file: str | None = None) -> int:
    """Load the export back, print the side-by-side table and verdict; 0 when it passes, 1 when not."""
    from lora_tui.core.export.artefacts import record_check
    from lora_tui.core.export.check import THRESHOLDS, verify_export

    if getattr(args, "no_check", False):
        print("Check:       skipped (--no-check)")
        return 0
    try:
        result = verify_export(args.run, artefact, gguf_file=gguf_file, check_prompts=args.check_prompts,
                               runtime=getattr(args, "check_runtime", "auto"), on_progress=_progress)
    except (AdapterError, ValueError, OSError) as exc:
        print(f"lora-tui {command}: the export was written, but the round-trip check could not run: {exc}", file=sys.stderr)
        return 1
    print()
    print(result.table())
    print(f"Thresholds:  {THRESHOLDS}")
    print(result.summary())
    for problem in result.problems:
        print(f"Problem:     {problem}")
    for note in result.notes:
        print(f"Note:        {note}")
    if result.template_note:
        print(f"Template:    {result.template_note}")
    source = find_adapter(args.run, allow_checkpoint=False)
    if source.run is not None:
        record_check(source.run, str(artefact / gguf_file if gguf_file else artefact), result.to_dict())
    if not result.ok:
        print(f"CHECK FAILED: {result.artefact} does not behave like the adapter (see above). It was kept so you can inspect it.")
        return 1
    return 0


def _export(args) -> int:
    from lora_tui.commands.chat import quiet_libraries

    gguf_path = None
    if args.gguf and not args.no_check and args.check_runtime == "llama.cpp":
        from lora_tui.core.export.llamacpp import llamacpp_missing

        if llamacpp_missing():  # before minutes of merging and writing
            return _error("export", llamacpp_missing())
    try:
        zip_path = zip_adapter(args.run, args.out if not args.gguf else None, overwrite=args.overwrite) if args.zip else None
        if args.gguf:
            quiet_libraries()
            gguf_path = export_gguf(args.run, args.out, gguf_type=args.gguf_type, overwrite=args.overwrite,
                                    on_progress=_progress)
        summary = export_summary(args.run)
    except AdapterError as exc:  # ExportError included
        return _error("export", str(exc))
    if args.out and not (args.zip or args.gguf):
        print("(--out only matters with --zip or --gguf)", file=sys.stderr)
    print(f"Run:         {summary['run'] or summary['name']} ({summary['state']})")
    print(f"Base model:  {summary['base_model']}")
    if not summary["adapter"]:
        print("Adapter:     not saved yet. It appears when the run finishes or is stopped.")
        return 0
    print(f"Adapter:     {summary['adapter']}  ({human_size(summary['adapter_bytes'])}: "
          f"{', '.join(summary['adapter_files'])})")
    print(f"Model card:  {summary['model_card'] or 'missing (written when the trainer saves the adapter)'}")
    if zip_path is not None:
        print(f"Zip:         {zip_path}  ({human_size(zip_path.stat().st_size)}) written")
    elif summary["zip"]:
        print(f"Zip:         {summary['zip']}  ({human_size(summary['zip_bytes'])})")
    else:
        print(f"Zip:         none yet (lora-tui export {args.run} --zip)")
    for merged in summary["merged"]:
        verdict = f", check: {merged['check']['verdict']}" if merged.get("check") else ""
        print(f"Merged:      {merged['path']}  ({human_size(merged['bytes'])}, {merged['dtype']}{verdict})")
    if not summary["merged"]:
        print(f"Merged:      none yet (lora-tui merge {args.run} OUT)")
    for item in summary["gguf"]:
        verdict = f", check: {item['check']['verdict']}" if item.get("check") else ""
        print(f"GGUF:        {item['path']}  ({human_size(item['bytes'])}, {item['type']}{verdict})")
    if not summary["gguf"]:
        print(f"GGUF:        none yet (lora-tui export {args.run} --gguf [--gguf-type q8_0])")
    print(f"Load it:     PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), \"{summary['adapter']}\")")
    if gguf_path is not None:
        modelfile = gguf_path.with_name(f"Modelfile-{args.gguf_type}")
        print(f"Written:     {gguf_path}  ({human_size(gguf_path.stat().st_size)})")
        print(f"  llama.cpp: llama-cli -m {gguf_path}")
        print(f"  Ollama:    cd {gguf_path.parent} && ollama create {gguf_path.stem.lower()} -f {modelfile.name}")
        return check_export("export", args, gguf_path.parent, gguf_path.name)
    return 0


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
    print(f"  transformers: AutoModelForCausalLM.from_pretrained(\"{out}\")")
    print(f"  Ollama:       cd {out} && ollama create {out.name.lower()} -f Modelfile")
    print(f"  GGUF:         lora-tui export {args.run} --gguf (or see {out / 'README.md'})")
    return check_export("merge", args, out)
