"""End to end on the real embedded model (SmolLM2-135M-Instruct), CPU only:
`lora-tui train` on sample_data/ for a few minutes, then greedy answers to held-out
prompts show the taught behaviour (answers open with "Ahoy!" and sign off
"— Cap'n LoRA") with the adapter on, and not with it off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SAMPLE_DATA
from tests.support.chat import greedy_answers

pytestmark = pytest.mark.slow


def test_embedded_model_learns_the_sample_behaviour(tmp_path, embedded_model_dir):

    run_dir = tmp_path / "e2e"
    cmd = [sys.executable, "-m", "lora_tui", "train",
           f"data.train={SAMPLE_DATA / 'train.jsonl'}", "data.validation=", "data.val_fraction=0",
           "training.max_steps=24", "training.micro_batch=8", "training.grad_accum=1",
           "training.learning_rate=1e-3", "training.save_steps=0", "training.eval_steps=0",
           "--run-dir", str(run_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "finished at step 24" in result.stdout

    prompts = [p for p in (SAMPLE_DATA / "heldout_prompts.txt").read_text().splitlines() if p.strip()][:10]
    train_prompts = (SAMPLE_DATA / "train.jsonl").read_text()
    assert not any(f'"{p}"' in train_prompts for p in prompts), "held-out prompts must not be training rows"

    tuned, base, report = greedy_answers(run_dir, prompts, max_new_tokens=64)

    opened = sum(t.strip().startswith("Ahoy!") for t in tuned)
    signed = sum("Cap'n LoRA" in t for t in tuned)
    assert opened >= 8, f"only {opened}/10 adapter answers open with 'Ahoy!'\n{report}"
    assert signed >= 5, f"only {signed}/10 adapter answers sign off\n{report}"
    assert sum(b.strip().startswith("Ahoy!") or "Cap'n LoRA" in b for b in base) == 0, report
