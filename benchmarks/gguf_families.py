"""The GGUF family matrix (issue 23 item 4): every family's tiny model (the family matrix's,
lora_tui/core/model/tiny.py, made sensitive as tests/support/gguf_runs.py makes it) with a small LoRA adapter,
exported as f16, q8_0 and q4_k_m and put through the product's round-trip check in llama.cpp (``verify_export``:
greedy answers, held-out rows scored under base, adapter and artefact, template, stop token), plus the adapter
alone as a LoRA GGUF on the shared base (``write_adapter_gguf``). Prints one row per family.

    flock /tmp/lora_tui_heavy.lock python benchmarks/gguf_families.py [family ...] [--rows N]

Families the export refuses print the one line ``gguf_support`` gives.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from lora_tui.commands.chat import quiet_libraries
    from lora_tui.core.export.artefacts import ExportError, export_gguf
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gguf import gguf_family, gguf_support
    from lora_tui.core.export.gguf_adapter import write_adapter_gguf
    from lora_tui.core.model.embedded import ensure_embedded_model
    from lora_tui.core.model.tiny import TINY_FAMILIES, build_tiny
    from tests.support.gguf_runs import attention_mlp_run, make_run

    parser = argparse.ArgumentParser()
    parser.add_argument("families", nargs="*", default=list(TINY_FAMILIES))
    parser.add_argument("--rows", type=int, default=8, help="held-out rows the check scores")
    args = parser.parse_args()
    quiet_libraries()
    root = Path(tempfile.mkdtemp(prefix="gguf-families-"))
    os.environ["LORA_TUI_CACHE"] = str(root / "cache")
    print(f"| family | architecture | {' | '.join(('f16', 'q8_0', 'q4_k_m', 'LoRA GGUF on f16 base'))} |")
    print("|---|---|---|---|---|---|")
    for family in args.families:
        from transformers import AutoConfig

        probe = build_tiny(family, root / f"probe-{family}", ensure_embedded_model())
        config = AutoConfig.from_pretrained(probe)
        ok, line = gguf_support(config)
        if not ok:
            print(f"| {family} | refused | {line} | | | |", flush=True)
            continue
        run = make_run(root / family, family, ensure_embedded_model())
        cells = []
        for gguf_type in ("f16", "q8_0", "q4_k_m", "lora"):
            start = time.time()
            if gguf_type == "lora":
                try:
                    info, note = write_adapter_gguf(run), ""
                except ExportError as exc:  # an all-linear adapter llama.cpp would apply in part (Gemma 4)
                    run, note = attention_mlp_run(root / family, run), f"refused ({str(exc).split(': ')[1][:60]}...); "
                    info = write_adapter_gguf(run)
                    note += "attention + MLP adapter: "
                result = verify_export(run, info.base_path.parent, gguf_file=info.base_path.name, lora=info.path,
                                       n_prompts=1, n_rows=args.rows, max_new_tokens=8)
            else:
                path = export_gguf(run, gguf_type=gguf_type)
                result = verify_export(run, path.parent, gguf_file=path.name, n_prompts=1, n_rows=args.rows,
                                       max_new_tokens=8)
            judged = result.judgement
            cells.append(f"{note if gguf_type == 'lora' else ''}{'PASS' if result.ok else 'FAIL'} {result.verdict}, same top "
                         f"{(judged.same_top if judged else result.agreement or 0):.0%}"
                         f"{f', KL {judged.kl_mean:.4f}' if judged else ''} ({time.time() - start:.0f} s)")
        print(f"| {family} | {gguf_family(config).arch} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
