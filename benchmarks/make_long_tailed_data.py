"""Write a long-tailed chat dataset for benchmarks/train_vs_trl.py: most rows short, a few very long.

Token lengths (SmolLM2 tokenizer, chat template included) run from ~20 to well over 1,000: a
log-normal number of sentences per answer, from a fixed seed, so every run writes the same file.
Prompts and answers are plain English built from the sample data's question / answer pairs.

    python benchmarks/make_long_tailed_data.py [OUT.jsonl] [--rows 400] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("/tmp/lora_tui_bench/long_tailed.jsonl")


def _pairs() -> list[tuple[str, str]]:
    pairs = []
    for line in (REPO / "sample_data" / "train.jsonl").read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        pairs.append((messages[0]["content"], messages[1]["content"]))
    return pairs


def make_rows(rows: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = _pairs()
    out = []
    for _ in range(rows):
        question, answer = rng.choice(pairs)
        # ~25 tokens per sentence; median ~2 sentences, a tail past 40 (1,000+ tokens).
        sentences = max(1, min(80, int(rng.lognormvariate(0.7, 1.1))))
        extra = [rng.choice(pairs)[1] for _ in range(sentences - 1)]
        prompt = question if rng.random() < 0.7 else question + " " + " ".join(rng.choice(pairs)[0] for _ in range(rng.randint(1, 6)))
        out.append({"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": " ".join([answer, *extra])}]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = make_rows(args.rows, args.seed)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
