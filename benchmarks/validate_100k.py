"""How long does `validate_dataset` take on a 100,000-row JSONL, token statistics included?

Generates the file in a temporary folder (questions and answers from the sample
data, numbered so no two rows are duplicates), times each validation stage, and
compares the token counting with a baseline measured in the same run: the
straightforward per-row ``tokenizer.apply_chat_template(..., tokenize=True)``
on a slice, scaled to the full row count.

    python3 benchmarks/validate_100k.py [--rows 100000] [--baseline-rows 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_file(path: Path, rows: int) -> None:
    pairs = []
    for line in (REPO / "sample_data" / "pairs.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            q, a = line.split(" | ", 1)
            pairs.append((q, a))
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            q, a = pairs[rng.randrange(len(pairs))]
            row = {"messages": [{"role": "user", "content": f"{q} (case {i})"},
                                {"role": "assistant", "content": f"Ahoy! {a} Note {i}. — Cap'n LoRA"}]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=5_000)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from lora_tui.core.data import validate_dataset
    from lora_tui.core.model.embedded import ensure_embedded_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        started = time.perf_counter()
        make_file(path, args.rows)
        print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - started:.1f} s")

        marks: list[tuple[str, float]] = []
        started, cpu_started = time.perf_counter(), time.process_time()
        report = validate_dataset(path, tokenizer=tokenizer, max_seq_len=1024,
                                  on_progress=lambda message, fraction: marks.append((message, time.perf_counter())))
        total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        stages: dict[str, float] = {}
        for (name, t0), (_, t1) in zip(marks, marks[1:]):
            stage = name.split(" (")[0]  # "Counting tokens (8,192 of ...)" is one stage
            stages[stage] = stages.get(stage, 0.0) + t1 - t0
        for stage, seconds in stages.items():
            print(f"  {stage:<40} {seconds:6.2f} s")
        print(f"validate_dataset: {report.rows:,} rows, {report.valid_rows:,} valid, "
              f"{len(report.findings)} findings, median {report.token_stats.median} tokens")
        print(f"TOTAL {total:.2f} s wall ({report.rows / total:,.0f} rows/s), {cpu:.2f} s CPU; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

        # Baseline: per-row template + tokenize, on a slice, scaled up.
        lines = path.read_text(encoding="utf-8").splitlines()[: args.baseline_rows]
        conversations = [json.loads(line)["messages"] for line in lines]
        started = time.perf_counter()
        for messages in conversations:
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        per_row = (time.perf_counter() - started) / len(conversations)
        token_stage = stages.get("Counting tokens")
        print(f"baseline per-row apply_chat_template(tokenize=True): {per_row * 1e6:.0f} us/row, "
              f"{per_row * args.rows:.1f} s for {args.rows:,} rows")
        if token_stage:
            print(f"token counting (render once + batched fast tokenizer): {token_stage:.2f} s, "
                  f"{per_row * args.rows / token_stage:.1f}x faster than the baseline")


if __name__ == "__main__":
    main()
