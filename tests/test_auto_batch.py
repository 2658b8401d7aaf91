"""training.micro_batch=auto (with gradient checkpointing auto): the choice, its reasons, and a real run.

The hardware here is a SimpleNamespace with only the free-memory figure the choice reads: that is
the point of these tests (the same plan against more or less memory); the estimates are the real ones
for the embedded model's dimensions.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lora_tui.core.config import Config, ConfigError, apply_overrides, config_to_yaml, load_config
from lora_tui.core.plan.memory import estimate_memory
from lora_tui.core.plan.workload import (AUTO_BASE, CHECKPOINT_SHARE, MICRO_BATCH_CAP, batch_for_run, choose_batch,
                                           effective_batch, fix_overrides, workload_of)
from lora_tui.core.plan.run_plan import ENV_PLAN
from tests.support.wait import wait_until

GiB = 1024**3


def _ram(gib: float):
    return SimpleNamespace(gpus=[], ram_available=int(gib * GiB))


def _need(config, micro, checkpointing, hardware) -> int:
    trial = apply_overrides(config.copy(), [f"training.micro_batch={micro}",
                                            f"training.gradient_checkpointing={str(checkpointing).lower()}"])
    return estimate_memory(workload_of(trial, hardware, device="cpu")).total_bytes


@pytest.mark.parametrize("ram_gib", [4, 8, 16, 64, 1024])
def test_auto_picks_the_largest_micro_batch_that_fits(ram_gib):
    config = apply_overrides(Config(), ["data.max_seq_len=512"])  # micro_batch and checkpointing on auto
    hardware = _ram(ram_gib)
    choice = choose_batch(config, hardware, "cpu")
    budget = CHECKPOINT_SHARE["cpu"] * hardware.ram_available
    # the effective batch the config asks for is kept exactly
    assert choice.micro_batch * choice.grad_accum == effective_batch(config) == AUTO_BASE * config.training.grad_accum
    need = _need(config, choice.micro_batch, choice.gradient_checkpointing, hardware)
    if choice.micro_batch > 1:
        assert need <= budget, choice.reasons
    larger = [m for m in range(choice.micro_batch + 1, MICRO_BATCH_CAP["cpu"] + 1) if effective_batch(config) % m == 0]
    if larger:  # the next size up would not have fitted, with the same checkpointing
        assert _need(config, larger[0], choice.gradient_checkpointing, hardware) > budget, choice.reasons
    if not choice.gradient_checkpointing:  # checkpointing only when it was needed
        assert need <= budget
    assert choice.reasons["micro_batch"].startswith("auto: ")


def test_more_memory_drops_checkpointing_first_then_grows_the_micro_batch():
    config = apply_overrides(Config(), ["data.max_seq_len=1024"])
    picks = [choose_batch(config, _ram(g), "cpu") for g in (2, 6, 12, 24, 48, 400)]
    pairs = [(p.gradient_checkpointing, p.micro_batch) for p in picks]
    for (ckpt_a, micro_a), (ckpt_b, micro_b) in zip(pairs, pairs[1:]):
        assert ckpt_b <= ckpt_a, pairs  # once off, checkpointing stays off with more memory
        if ckpt_a == ckpt_b:
            assert micro_b >= micro_a, pairs  # same checkpointing: never a smaller micro-batch
    assert pairs[0] == (True, 1) and pairs[-1] == (False, MICRO_BATCH_CAP["cpu"]), pairs


def test_checkpointing_off_when_the_base_micro_batch_fits_without_it():
    config = apply_overrides(Config(), ["data.max_seq_len=128"])
    roomy = choose_batch(config, _ram(1024), "cpu")
    assert roomy.gradient_checkpointing is False and roomy.reasons["gradient_checkpointing"].startswith("off")
    tight = choose_batch(apply_overrides(Config(), ["data.max_seq_len=1024"]), _ram(16), "cpu")
    assert tight.gradient_checkpointing is True and "without it" in tight.reasons["gradient_checkpointing"]


def test_nothing_fits_gives_one_row_and_says_so():
    choice = choose_batch(apply_overrides(Config(), ["data.max_seq_len=4096"]), _ram(0.5), "cpu")
    assert (choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing) == (1, 16, True)
    assert "even one row" in choice.reasons["micro_batch"]


def test_short_data_is_planned_at_its_longest_row():
    """No grouped or padding-free micro-batch is longer than the data's longest row; packed rows are full."""
    config = apply_overrides(Config(), ["data.max_seq_len=1024"])
    hardware = _ram(16)
    worst = choose_batch(config, hardware, "cpu")
    short = choose_batch(config, hardware, "cpu", longest=80)
    assert worst.gradient_checkpointing is True and short.gradient_checkpointing is False, (worst, short)
    assert "rows up to 80 tokens" in short.reasons["micro_batch"]
    assert workload_of(config, hardware, device="cpu", longest=80).seq_len == 80
    assert workload_of(config, hardware, device="cpu", longest=5000).seq_len == 1024
    packed = apply_overrides(config.copy(), ["training.batching=packed"])
    assert workload_of(packed, hardware, device="cpu", longest=80).seq_len == 1024


def test_explicit_values_win():
    config = apply_overrides(Config(), ["training.micro_batch=3", "training.grad_accum=5",
                                        "training.gradient_checkpointing=false"])
    choice = choose_batch(config, _ram(0.5), "cpu")
    assert (choice.micro_batch, choice.grad_accum, choice.gradient_checkpointing) == (3, 5, False)
    only_ckpt = apply_overrides(Config(), ["data.max_seq_len=1024", "training.gradient_checkpointing=true"])
    choice = choose_batch(only_ckpt, _ram(1024), "cpu")
    assert choice.gradient_checkpointing is True and choice.reasons["gradient_checkpointing"] == "set in the config"
    assert choice.micro_batch * choice.grad_accum == 16


def test_cpu_ranks_share_the_ram():
    config = apply_overrides(Config(), ["data.max_seq_len=1024"])
    alone = choose_batch(config, _ram(24), "cpu", world_size=1)
    shared = choose_batch(config, _ram(24), "cpu", world_size=4)
    assert shared.micro_batch <= alone.micro_batch
    assert "6.0 GiB free" in shared.reasons["micro_batch"] or "6.0 GiB free" in shared.reasons["gradient_checkpointing"]


def test_auto_word_only_means_auto_for_numbers():
    config = apply_overrides(Config(), ["training.micro_batch=8"])
    assert config.training.micro_batch == 8
    assert apply_overrides(config, ["training.micro_batch=auto"]).training.micro_batch is None
    with pytest.raises(ConfigError, match="whole number or auto"):
        apply_overrides(Config(), ["training.micro_batch=on"])
    assert "micro_batch: auto" in config_to_yaml(Config())


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(Config()))
    assert load_config(path).training.micro_batch is None
    path.write_text(config_to_yaml(apply_overrides(Config(), ["training.micro_batch=2"])))
    assert load_config(path).training.micro_batch == 2


def test_a_smaller_micro_batch_fix_keeps_the_effective_batch():
    config = apply_overrides(Config(), ["training.grad_accum=3"])  # auto: 12 rows per step
    assert fix_overrides(config, {"batch": 2}) == ["training.micro_batch=2", "training.grad_accum=6"]


def test_resume_keeps_the_first_starts_batch(tmp_path, monkeypatch):
    from lora_tui.core.run.runs import RunDirectory

    monkeypatch.delenv(ENV_PLAN, raising=False)
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.append_event("started", micro_batch=2, grad_accum=8, gradient_checkpointing=True)
    run.append_event("started", micro_batch=2, grad_accum=8, gradient_checkpointing=True)  # an earlier resume
    config = Config()
    kept = batch_for_run(run, config, _ram(1024), "cpu", resume=True)
    assert (kept.micro_batch, kept.grad_accum, kept.gradient_checkpointing) == (2, 8, True)
    assert "resume" in kept.reasons["micro_batch"]
    fresh = batch_for_run(run, config, _ram(1024), "cpu", resume=False)
    assert fresh.micro_batch == MICRO_BATCH_CAP["cpu"]  # a new start decides again


def test_a_run_with_auto_records_its_batch_and_keeps_the_effective_batch(tiny_model_dir, tmp_path, monkeypatch):
    """Real trainer: epoch progress after N steps is N x effective batch / rows, whatever the split."""
    from lora_tui.core.run.launcher import start_run

    monkeypatch.delenv(ENV_PLAN, raising=False)
    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}!"}]}
            for i in range(32)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = apply_overrides(Config(), [f"model.name={tiny_model_dir}", f"data.train={data}", "data.val_fraction=0",
                                        "data.max_seq_len=256", "training.grad_accum=2", "training.max_steps=2",
                                        "training.eval_steps=0", "training.save_steps=0", "lora.r=4"])
    assert config.training.micro_batch is None
    run = start_run(config, tmp_path / "runs" / "auto")
    wait_until(lambda: run.state() in ("finished", "failed", "stopped", "dead"), 240, interval=0.3, what="the run to end")
    assert run.state() == "finished", run.log_path.read_text()[-3000:]
    events = run.read_events()
    started = next(e for e in events if e["type"] == "started")
    assert started["micro_batch"] * started["grad_accum"] == AUTO_BASE * 2
    assert started["micro_batch"] > 1 and started["engine_reasons"]["micro_batch"].startswith("auto: ")
    last = [e for e in events if e["type"] == "step" and e.get("epoch") is not None][-1]
    assert last["epoch"] == pytest.approx(2 * AUTO_BASE * 2 / 32, abs=0.01)
    assert load_config(run.config_path).training.micro_batch is None  # the run's config still says auto
    # the recorded estimate plans rows as long as the data's longest (a few tokens here), not max_seq_len
    assert started["memory_estimate"]["seq_len"] < 256
    card = (run.path / "adapter" / "README.md").read_text()
    assert f"| Batch | {started['micro_batch']} x {started['grad_accum']} = 8 rows per step (micro-batch auto) |" in card
    assert (f"| Engine | {started['batching']} batching, {started['attention']} attention, "
            f"kernels {'+'.join(started['kernels'])}, gradient checkpointing ") in card


def test_headless_progress_prints_the_batch_and_why():
    from lora_tui.commands.progress import describe

    started = {"type": "started", "method": "LoRA", "model": "m", "device": "cpu", "precision": "bf16",
               "num_train_rows": 10, "num_eval_rows": 0, "max_steps": 5, "trainable_params": 1, "total_params": 10,
               "target_modules": ["q_proj"], "micro_batch": 4, "grad_accum": 4, "gradient_checkpointing": False,
               "batching": "grouped", "attention": "sdpa", "kernels": ["lean_head"],
               "engine_reasons": {"micro_batch": "auto: 4 rows need 5.2 GiB; 8 would need 9.4, over 25% of 22 GiB free"}}
    text = describe(started)
    assert "batch 4 x 4 = 16 rows per step (auto: 4 rows need 5.2 GiB; 8 would need 9.4" in text and "checkpointing off" in text
    older = {k: v for k, v in started.items() if k not in ("micro_batch", "grad_accum")}  # runs from before auto
    assert "batch" not in describe(older)
