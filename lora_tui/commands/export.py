"""`lora-tui export RUN [--zip] [--out]` and `lora-tui merge RUN OUT [--dtype] [--overwrite]`.

Front-end only: the work is lora_tui.core.export. Foreseeable problems print one line
and exit 2; nothing is overwritten without --overwrite.
"""

from __future__ import annotations

import sys

from lora_tui.core.adapters import AdapterError
from lora_tui.core.export import export_summary, merge_adapter, zip_adapter
from lora_tui.core.units import human_size


def _error(command: str, message: str) -> int:
    print(f"lora-tui {command}: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    if args.command == "merge":
        return _merge(args)
    return _export(args)


def _export(args) -> int:
    try:
        zip_path = zip_adapter(args.run, args.out, overwrite=args.overwrite) if args.zip else None
        summary = export_summary(args.run)
    except AdapterError as exc:  # ExportError included
        return _error("export", str(exc))
    if args.out and not args.zip:
        print("(--out only matters with --zip)", file=sys.stderr)
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
        print(f"Merged:      {merged['path']}  ({human_size(merged['bytes'])}, {merged['dtype']})")
    if not summary["merged"]:
        print(f"Merged:      none yet (lora-tui merge {args.run} OUT)")
    print(f"Load it:     PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), \"{summary['adapter']}\")")
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
    print(f"  GGUF:         see {out / 'README.md'} (llama.cpp convert_hf_to_gguf.py)")
    return 0
