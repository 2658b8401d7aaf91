"""`lora-tui push RUN REPO_ID [--private] [--merged] [--gguf] [--dry-run]` (the kinds: core/export/formats.py).

Front-end only: the work is lora_tui.core.export.hub. The token is the hub client's business (HF_TOKEN
or `hf auth login`); this command names where it comes from, never the token. Foreseeable
problems (no network, no adapter yet, a refused upload) print one line and exit 2.
"""

from __future__ import annotations

import sys

from lora_tui.core.export.formats import pushable
from lora_tui.core.export.hub import PushError, push_run, token_source, upload_plan
from lora_tui.core.units import human_size


def run(args) -> int:
    kinds = [f.name for f in pushable() if getattr(args, f.push_flag.lstrip("-").replace("-", "_"), False)]
    if len(kinds) > 1:
        print(f"lora-tui push: choose one of {', '.join(f.push_flag for f in pushable())} "
              "(push them to separate repositories).", file=sys.stderr)
        return 2
    try:
        plan = upload_plan(args.run, args.repo_id, kinds[0] if kinds else "adapter")
    except PushError as exc:
        print(f"lora-tui push: {exc}", file=sys.stderr)
        return 2
    where = f"https://huggingface.co/{plan.repo_id}"
    print(f"{'Would upload' if args.dry_run else 'Uploading'} the {plan.kind} to {where}"
          f"{' (private)' if args.private else ''}: {len(plan.files)} files, {human_size(plan.total_bytes)}")
    for path, name in plan.files:
        print(f"  {name:<40} {human_size(path.stat().st_size):>10}  {path}")
    source = token_source()
    print(f"Token:       {source}")
    if args.dry_run:
        print("Dry run: nothing was sent.")
        return 0
    if source == "none":
        print("lora-tui push: no hub token. Fix: set HF_TOKEN or run `hf auth login`; nothing was uploaded.", file=sys.stderr)
        return 2
    try:
        url = push_run(plan, private=args.private)
    except PushError as exc:
        print(f"lora-tui push: {exc}", file=sys.stderr)
        return 2
    print(f"Uploaded:    {url}")
    return 0
