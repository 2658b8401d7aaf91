"""End to end on the real embedded model (SmolLM2-135M-Instruct), CPU only (issue 28 item 7): `lora-tui train
training.method=dpo` on sample_data/preference.jsonl (the Cap'n LoRA answer preferred over the same answer in
plain words) for a few CPU minutes. The taught preference appears: the reward accuracy on held-out pairs
rises from 0 % (policy == reference at step 0) and the adapter's greedy answers to held-out prompts open with
"Ahoy!" where the base model's never do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import SAMPLE_DATA
from tests.support.chat import greedy_answers

pytestmark = pytest.mark.slow

HELD_OUT_PAIRS = 16
STEPS, MICRO_BATCH, LEARNING_RATE = 16, 4, "1e-3"


def test_embedded_model_learns_the_sample_preference(tmp_path, embedded_model_dir):
    from lora_tui.core.run.runs import RunDirectory

    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join((SAMPLE_DATA / "preference_valid.jsonl").read_text().splitlines(keepends=True)[:HELD_OUT_PAIRS]))
    run_dir = tmp_path / "dpo"
    cmd = [sys.executable, "-m", "lora_tui", "train", "training.method=dpo",
           f"data.train={SAMPLE_DATA / 'preference.jsonl'}", f"data.validation={valid}",
           f"training.max_steps={STEPS}", f"training.micro_batch={MICRO_BATCH}", "training.grad_accum=1",
           f"training.learning_rate={LEARNING_RATE}", "training.save_steps=0", "training.eval_steps=0",
           "--run-dir", str(run_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"finished at step {STEPS}" in result.stdout

    evals = {e["phase"]: e for e in RunDirectory(run_dir).read_events() if e["type"] == "eval"}
    before, after = evals["before"], evals["after"]
    assert before["reward_accuracy"] == 0 and before["reward_margin"] == 0  # the policy is the reference at step 0
    assert after["reward_accuracy"] >= 0.9, after
    assert after["reward_margin"] > 1.0 and after["logp_chosen"] > before["logp_chosen"], (before, after)

    prompts = [p for p in (SAMPLE_DATA / "heldout_prompts.txt").read_text().splitlines() if p.strip()][:10]
    pairs = [json.loads(line)["prompt"] for line in (SAMPLE_DATA / "preference.jsonl").read_text().splitlines()]
    assert not set(prompts) & set(pairs), "held-out prompts must not be training pairs"
    tuned, base, report = greedy_answers(run_dir, prompts, max_new_tokens=40)
    opened = sum(t.strip().startswith("Ahoy") for t in tuned)
    assert sum(b.strip().startswith("Ahoy") for b in base) == 0, report
    assert opened >= 7, f"only {opened}/10 adapter answers open with 'Ahoy'\n{report}"
