"""dpo and kto through TRL's trainers on the tiny random Llama (issue 28 items 1, 4, 7): the reference is the
base with the adapter off (no copy) or, from an SFT run's adapter, TRL's frozen copy of that adapter; only
LoRA weights move; the run's events carry the preference metrics; every format trains; the run directory
and exit states are the same as SFT's; kill -9 + --resume is bit-identical."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from lora_tui.core.config import apply_overrides
from lora_tui.core.run.launcher import resume_run, start_run
from tests.support.training import tiny_config, train_only_config, wait_done, wait_run

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
METRICS = ("reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected")


def _pairs(folder: Path, n: int = 24) -> tuple[Path, Path]:
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f"Ahoy! {i} plus {i} is {2 * i}. — Cap'n LoRA",
             "rejected": f"{i} plus {i} is {2 * i}."} for i in range(n + 6)]
    train, valid = folder / "pairs.jsonl", folder / "pairs_valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
    valid.write_text("".join(json.dumps(r) + "\n" for r in rows[n:]))
    return train, valid


def _tensors(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, Path]:
    return _pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir, data_files):
    run = start_run(tiny_config(tiny_model_dir, data_files, "training.max_steps=4", "training.eval_steps=0"),
                    tmp_path_factory.mktemp("runs") / "sft")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    return run


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, tiny_model_dir, pairs):
    run = start_run(tiny_config(tiny_model_dir, pairs, "training.method=dpo"), tmp_path_factory.mktemp("runs") / "dpo")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    return run


def test_the_reference_is_the_base_with_the_adapter_off(tiny_model_dir, pairs, tmp_path):
    """In-process, with the recipe's own pieces: TRL gets the fresh adapter as a peft_config and keeps no
    reference copy (no "ref" adapter, no ref_model); training moves LoRA weights only."""
    import torch

    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.plan.run_plan import choose_engine
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train import preference

    config = tiny_config(tiny_model_dir, pairs, "training.method=dpo", "training.max_steps=3", "training.save_steps=0",
                         "training.eval_steps=0", "data.validation=")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, facts = preference.build_datasets(config, tokenizer)
    assert set(train_ds.column_names) == {"prompt_ids", "chosen_ids", "rejected_ids", "length"}
    choice = choose_engine(config, "cpu")
    trainer, targets = preference.trainer_for_run(config, RunDirectory(tmp_path), "cpu", "fp32", choice, tokenizer,
                                                  train_ds, None, [], facts)
    model = trainer.model
    assert trainer.ref_model is None and list(model.peft_config) == ["default"]
    with torch.no_grad():  # an adapter that has learnt something, so "adapter off" and "on" differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = trainer.data_collator([train_ds[i] for i in range(4)])

    def logps(adapter: bool):
        ids, mask = batch["input_ids"], batch["completion_mask"][:, 1:]
        with torch.no_grad():
            if adapter:
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
            else:
                with model.disable_adapter():
                    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits
        taken = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        return (taken * mask).sum(1)

    with torch.no_grad():
        ref = torch.cat(trainer.compute_ref_log_probs(model, batch))  # TRL's reference pass
    assert torch.allclose(ref, logps(adapter=False), atol=1e-3), "the reference is the base, adapter off"
    assert not torch.allclose(ref, logps(adapter=True), atol=1e-3)
    trainer.train()
    after = dict(model.named_parameters())
    lora = [k for k in before if "lora_" in k]
    assert all(torch.equal(before[k], after[k]) for k in before if "lora_" not in k), "base weights changed"
    assert any(not torch.equal(before[k], after[k]) for k in lora if "lora_B" in k), "no LoRA weight trained"


def test_dpo_run_records_preference_metrics_like_any_run(dpo_run):
    events = dpo_run.read_events()
    started = next(e for e in events if e["type"] == "started")
    assert started["training_method"] == "dpo" and started["method"] == "LoRA"
    assert started["preference"] == {"beta": 0.1, "loss_type": "sigmoid",
                                     "reference": "the base model, the adapter switched off (no second copy)"}
    assert started["kernels"] == ["lean_head"] and started["batching"] == "grouped"
    assert "TRL 1.16" in started["engine_reasons"]["batching"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 7))
    assert all(all(e.get(k) is not None for k in METRICS) for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    assert [(e["step"], e["phase"]) for e in evals] == [(0, "before"), (3, "during"), (6, "after")]
    assert evals[0]["reward_margin"] == 0 and evals[0]["reward_accuracy"] == 0  # policy == reference at step 0
    assert evals[-1]["reward_margin"] > 0 and evals[-1]["reward_accuracy"] > 0.5, evals[-1]
    assert events[-1]["type"] == "finished" and dpo_run.read_status()["state"] == "finished"
    assert {e["step"] for e in events if e["type"] == "checkpoint"} == {3, 6}
    assert dpo_run.read_status().get("eval_reward_accuracy") == evals[-1]["reward_accuracy"]


def test_dpo_adapter_is_one_plain_peft_adapter(dpo_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    names = sorted(p.name for p in dpo_run.adapter_dir.iterdir())
    assert "adapter_model.safetensors" in names and "ref" not in names
    weights = _tensors(dpo_run.adapter_dir)
    assert weights and all("lora_" in k for k in weights)
    assert all(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), dpo_run.adapter_dir)
    ids = torch.tensor([[1, 2, 3]])
    with model.disable_adapter():
        plain = model(ids).logits
    assert not torch.allclose(model(ids).logits, plain)
    card = (dpo_run.adapter_dir / "README.md").read_text()
    assert "| Objective | DPO: beta 0.1, sigmoid loss" in card and "Reward accuracy" in card and "- dpo" in card


def test_dpo_from_an_sft_adapter_keeps_training_it(sft_run, tiny_model_dir, pairs, tmp_path):
    """init_adapter: the SFT adapter's weights are the start and go on training (same keys, same LoRA
    settings); TRL's reference is a frozen copy of them, so step 0's rewards are 0; the SFT run is untouched;
    adapter/ is one self-contained adapter."""
    sft_weights = _tensors(sft_run.adapter_dir)
    sft_sha = (sft_run.adapter_dir / "adapter_model.safetensors").read_bytes()
    config = tiny_config(tiny_model_dir, pairs, "training.method=dpo", f"training.init_adapter={sft_run.path}",
                         "lora.r=8")  # ignored: the adapter's own r (4) holds
    run = start_run(config, tmp_path / "dpo-from-sft")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    events = run.read_events()
    started = next(e for e in events if e["type"] == "started")
    assert started["init_adapter"] == str(sft_run.adapter_dir.resolve())
    assert started["preference"]["reference"] == "the starting adapter, frozen (a copy of its LoRA weights)"
    before = next(e for e in events if e["type"] == "eval" and e["phase"] == "before")
    assert before["reward_margin"] == 0 and before["reward_accuracy"] == 0  # the reference is where it starts
    after = next(e for e in events if e["type"] == "eval" and e["phase"] == "after")
    assert after["reward_margin"] > 0
    dpo_weights = _tensors(run.adapter_dir)
    assert dpo_weights.keys() == sft_weights.keys()
    assert json.loads((run.adapter_dir / "adapter_config.json").read_text())["r"] == 4
    assert any(not (dpo_weights[k] == sft_weights[k]).all() for k in sft_weights)
    assert (sft_run.adapter_dir / "adapter_model.safetensors").read_bytes() == sft_sha
    assert not (run.adapter_dir / "ref").exists()
    checkpoint = run.last_checkpoint()
    assert (checkpoint / "ref" / "adapter_model.safetensors").is_file(), "the checkpoint keeps the reference for --resume"
    ref = _tensors(checkpoint / "ref")
    assert all((ref[k] == sft_weights[k]).all() for k in sft_weights), "the reference is the SFT adapter, frozen"
    # side by side: the DPO adapter, its SFT start and the base, one base model loaded, same seed
    import subprocess
    import sys

    chat = subprocess.run([sys.executable, "-m", "lora_tui", "chat", str(sft_run.path), str(run.path), "--compare",
                           "sft,dpo-from-sft,base", "--prompt", "What is 2 plus 2?", "--greedy", "--max-new-tokens", "4"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert [line for line in chat.stdout.splitlines() if line.startswith("[")] == ["[sft]", "[dpo-from-sft]", "[base model]"]


def test_kto_trains_on_labelled_rows(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"Ahoy! {2 * i}. — Cap'n LoRA" if i % 3 else f"{2 * i}.",
             "label": bool(i % 3)} for i in range(24)]  # 16 desirable, 8 undesirable
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = start_run(tiny_config(tiny_model_dir, (data, ""), "training.method=kto", "data.val_fraction=0.25"), tmp_path / "kto")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    events = run.read_events()
    started = next(e for e in events if e["type"] == "started")
    kto = started["preference"]["kto"]
    assert started["training_method"] == "kto" and started["preference"]["loss_type"] == "kto"
    assert kto["desirable"] + kto["undesirable"] == 18 and kto["weights"][1] >= 1.0  # the rarer label weighted up
    steps = [e for e in events if e["type"] == "step"]
    assert all(e.get("kl") is not None for e in steps) and any(e.get("logp_chosen") is not None for e in steps)


@pytest.mark.parametrize("data, method", [("formats/preference_conversational.jsonl", "dpo"),
                                          ("formats/preference_implicit.jsonl", "dpo"),
                                          ("formats/preference_text.jsonl", "dpo"),
                                          ("formats/kto.jsonl", "kto"),
                                          ("formats/preference_conversational.jsonl", "kto")])
def test_every_format_trains(tiny_model_dir, tmp_path, data, method):
    config = train_only_config(tiny_model_dir, SAMPLE / data, f"training.method={method}", "training.max_steps=2",
                               "training.save_steps=0", "training.micro_batch=2", "data.max_seq_len=128")
    run = start_run(config, tmp_path / "run")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    steps = [e for e in run.read_events() if e["type"] == "step"]
    assert len(steps) == 2 and all(e["loss"] is not None and e["tokens_seen"] > 0 for e in steps)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_qlora_dpo_runs_on_a_4bit_base(tiny_model_dir, pairs, tmp_path):
    run = start_run(train_only_config(tiny_model_dir, pairs[0], "training.method=dpo", "model.load_in=4bit",
                                      "training.max_steps=2", "training.save_steps=0"), tmp_path / "qdpo")
    assert wait_done(run) == "finished", run.log_path.read_text()[-3000:]
    started = next(e for e in run.read_events() if e["type"] == "started")
    assert started["method"] == "QLoRA" and started["quantized_layers"] > 0 and started["training_method"] == "dpo"
    assert started["adapter_dtypes"] == ["torch.float32"]  # TRL's bf16 cast undone on CPU, as for SFT


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_kill_9_then_resume_is_bit_identical(tiny_model_dir, pairs, tmp_path, method):
    overrides = (f"training.method={method}", "training.max_steps=16", "training.save_steps=4")
    whole = start_run(train_only_config(tiny_model_dir, pairs[0], *overrides), tmp_path / "whole")
    assert wait_done(whole) == "finished", whole.log_path.read_text()[-3000:]
    killed = start_run(train_only_config(tiny_model_dir, pairs[0], *overrides), tmp_path / "killed")
    wait_run(lambda: killed.last_checkpoint(), killed)
    os.kill(killed.read_status()["pid"], signal.SIGKILL)
    assert wait_done(killed) == "dead"
    kept = killed.last_checkpoint()
    assert kept is not None and int(kept.name.split("-")[1]) < 16, "killed before the end"
    assert kept.name in resume_run(killed.path).resume_note
    assert wait_done(killed) == "finished", killed.log_path.read_text()[-3000:]
    a, b = _tensors(whole.adapter_dir), _tensors(killed.adapter_dir)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "resumed adapter differs"
    resumed = [e for e in killed.read_events() if e["type"] == "step"]
    assert resumed[-1]["reward_margin" if method == "dpo" else "kl"] is not None


def test_export_check_measures_the_preference_kept(dpo_run, tmp_path):
    """merge + the round-trip check: on the run's held-out pairs the merged model prefers the chosen answer as
    often as the adapter does, and keeps (all of) its margin over the base."""
    from lora_tui.core.export.artefacts import merge_adapter
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gain import verdict_rows

    merged = merge_adapter(dpo_run.path, tmp_path / "merged", dtype="float32")
    result = verify_export(dpo_run.path, merged, n_prompts=1, max_new_tokens=4)
    pref = result.preference
    assert pref is not None and pref.items == 6  # the run's 6 validation pairs
    assert pref.adapter_accuracy > 0.5 and pref.artefact_accuracy == pref.adapter_accuracy
    assert pref.adapter_margin > 0 and abs(pref.kept - 1) < 0.01 and pref.ok
    rows = dict(verdict_rows(result.to_dict()))
    assert "prefers the chosen answer on" in rows["Preference kept"]


def test_the_lean_head_scores_dpo_exactly_as_trls_head(tiny_model_dir, pairs, tmp_path):
    """The lean head (answers' tokens only, narrower vocabulary tiles on CPU) gives TRL's DPO loss, gradients and
    every logged metric of TRL's own fused head on the same batch."""
    import torch

    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.plan.run_plan import choose_engine
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train import engine, preference

    config = tiny_config(tiny_model_dir, pairs, "training.method=dpo", "data.validation=", "training.save_steps=0")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, facts = preference.build_datasets(config, tokenizer)
    batch = None
    results = []
    for lean in (False, True):
        trainer, _ = preference.trainer_for_run(config, RunDirectory(tmp_path / str(lean)), "cpu", "fp32",
                                                choose_engine(config, "cpu"), tokenizer, train_ds, None, [], facts)
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.full_like(param, 0.01))
        if lean:
            assert engine.install_lean_head(trainer.model, 256, exact_metrics=True)  # tiles of 256 columns
        batch = batch or trainer.data_collator([train_ds[i] for i in range(4)])
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        results.append((loss.detach(), grads, metrics))
    (loss_a, grads_a, metrics_a), (loss_b, grads_b, metrics_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-5) and grads_a.keys() == grads_b.keys()
    assert all(torch.allclose(grads_a[k], grads_b[k], atol=1e-5) for k in grads_a)
    assert metrics_a.keys() == metrics_b.keys() and "logits/chosen" in metrics_a and "rewards/margins" in metrics_a
    assert all(abs(metrics_a[k] - metrics_b[k]) < 1e-4 * max(1, abs(metrics_a[k])) for k in metrics_a), (metrics_a, metrics_b)
