"""What each GGUF type keeps of a fine-tune, measured in llama.cpp (issue 26): the figures behind
lora_tui/core/export/gain.py's bands and thresholds and the README's round-trip table.

    # every type of a finished run, and the four artefacts built to fail (tests/support/broken_gguf.py)
    flock /tmp/lora_tui_heavy.lock python benchmarks/export_gain.py RUN [--types f16 q8_0 ...] [--broken] [--json OUT]

    # the second family: a tiny Qwen2 (256 wide, 2 layers) first trained in full on the sample answers
    # *without* the taught prefix and sign-off (a base that answers plainly, with peaked next-token
    # distributions like a real model), then `lora-tui train` 30 LoRA steps on the sample data
    flock /tmp/lora_tui_heavy.lock python benchmarks/export_gain.py --make-family DIR

Prints one markdown row per artefact: file size (and the estimate made before writing), the fine-tune's
gain, the share kept with its 95 % interval, KL mean / 99th percentile, same top token, the adapter mass
outside llama.cpp's listed tokens, the verdict and the exit code `lora-tui export` would give.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TAUGHT = re.compile(r"^Ahoy! | — Cap'n LoRA$")


def make_family(folder: Path, steps: int = 200) -> Path:
    """A pretrained-looking tiny Qwen2 base, then a 30-step `lora-tui train` run on it; returns the run."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lora_tui.core.data import ChatFormatter, Example, load_examples
    from lora_tui.core.model.embedded import ensure_embedded_model

    base = folder / "tiny-qwen2"
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    if not (base / "config.json").is_file():
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
        plain = []
        for e in load_examples(REPO / "sample_data/train.jsonl").examples:
            plain.append(Example(e.line, [{**m, "content": TAUGHT.sub("", m["content"])} if m["role"] == "assistant"
                                          else m for m in e.messages]))
        rows = ChatFormatter(tokenizer).tokenize_many(plain, 128)
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        started = time.time()
        for step in range(steps):
            batch = [rows[i] for i in torch.randint(len(rows), (8,), generator=generator).tolist()]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor([r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            if step % 20 == 0 or step == steps - 1:
                print(f"  base step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
    run = folder / "runs" / "qwen2-sample"
    if not (run / "adapter" / "adapter_config.json").is_file():
        subprocess.run([sys.executable, "-m", "lora_tui", "train", f"model.name={base}", "training.max_steps=30",
                        "training.micro_batch=8", "training.grad_accum=1", "training.learning_rate=2e-3",
                        "training.save_steps=0", "training.eval_steps=0", "--run-dir", str(run)], check=True, cwd=REPO)
    return run


def measure(run: Path, gguf_type: str, out_dir: Path, variant: str | None = None, estimate: int | None = None) -> dict:
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.check import verify_export
    from tests.support.broken_gguf import write_broken_gguf

    started = time.time()
    if variant:
        path = write_broken_gguf(run, out_dir / f"broken-{variant}-{gguf_type}.gguf", variant, gguf_type)
    else:
        path = export_gguf(run, out_dir / f"{run.name}-{gguf_type}.gguf", gguf_type=gguf_type, overwrite=True)
    written = time.time()
    result = verify_export(run, path.parent, gguf_file=path.name, runtime="llama.cpp")
    j = result.judgement
    row = {"artefact": variant or gguf_type, "type": gguf_type, "bytes": path.stat().st_size, "estimate": estimate,
           "gain": j.gain, "gain_low": j.gain_low, "kept": j.kept, "kept_low": j.kept_low, "kept_high": j.kept_high,
           "kl_mean": j.kl_mean, "kl_p99": j.kl_p99, "same_top": j.same_top, "rest_mass": j.rest_mass,
           "verdict": result.verdict, "words": result.verdict_words, "ok": result.ok, "template_same": result.template_same,
           "eos_ok": result.eos_ok, "rows": j.rows, "tokens": j.tokens, "write_s": written - started,
           "check_s": time.time() - written, "runtime": result.runtime}
    kept = f"{j.kept:.1%} ({j.kept_low:.1%}-{j.kept_high:.1%})" if j.kept_low is not None else "-"
    size = f"{row['bytes'] / 2**20:.1f} MiB" + (f" (est. {estimate / 2**20:.1f})" if estimate else "")
    print(f"| {row['artefact']} | {size} | {j.gain:+.3f} | {kept} | {j.kl_mean:.4f} / {j.kl_p99:.3f} | "
          f"{j.same_top:.1%} | {j.rest_mass:.2%} | {result.verdict} | {0 if result.ok else 1} | "
          f"{row['write_s']:.0f} + {row['check_s']:.0f} s |", flush=True)
    return row


def main() -> int:
    from lora_tui.core.export.formats import GGUF_TYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="a finished run directory")
    parser.add_argument("--types", nargs="+", default=list(GGUF_TYPES), choices=GGUF_TYPES)
    parser.add_argument("--broken", action="store_true", help="also the four artefacts built to fail (at q8_0)")
    parser.add_argument("--make-family", metavar="DIR", help="build and train the tiny Qwen2 family in DIR, then measure it")
    parser.add_argument("--out", default=None, help="where the GGUF files go (default: <run>/gguf-bench)")
    parser.add_argument("--json", default=None, help="write the rows here too")
    args = parser.parse_args()
    run = make_family(Path(args.make_family)) if args.make_family else Path(args.run)
    out_dir = Path(args.out) if args.out else run / "gguf-bench"
    from lora_tui.core.export.sizes import gguf_sizes
    from lora_tui.core.run.adapters import find_adapter

    source = find_adapter(run, allow_checkpoint=False)
    estimates = gguf_sizes(source.base_model)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("| artefact | file | gain (nats/token) | gain kept (95 %) | KL mean / p99 | same top token | "
          "rest mass | verdict | exit | time (write + check) |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = [measure(run, t, out_dir, estimate=estimates.get(t)) for t in args.types]
    if args.broken:
        from tests.support.broken_gguf import VARIANTS

        rows += [measure(run, "q8_0", out_dir, variant) for variant in VARIANTS]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
