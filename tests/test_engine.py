"""The training engine (core/train/engine.py, core/plan/memory_record.py): the lean LM head gives the plain
loss and gradients, padding-free batches equal padded ones row by row, auto choices and the
closed-loop memory record."""

from __future__ import annotations

import pytest

from lora_tui.core.config import Config, apply_overrides, check_value, config_to_yaml, load_config


def _model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")


def _batch(pad_id: int):
    import torch

    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(5, 400, (n,), generator=g) for n in (9, 5, 13)]
    labels = [r.clone() for r in rows]
    labels[0][:3] = -100  # a prompt: not trained
    return rows, labels


def _padded(rows, labels, pad_id):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    lab = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        ids[i, :len(r)], lab[i, :len(r)], mask[i, :len(r)] = r, lb, 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


def test_lean_head_matches_plain_loss_and_gradients(tiny_model_dir):
    """Same loss as the model's own full-logits cross-entropy, same gradients, vocabulary in several tiles."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    from lora_tui.core.train.engine import install_lean_head

    plain, lean = _model(tiny_model_dir), _model(tiny_model_dir)
    add_fused_lm_head(lean, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer does first
    assert install_lean_head(lean, vocab_tile=1000, metric_sample=4)
    rows, labels = _batch(0)
    batch = _padded(rows, labels, 0)
    reference = plain(**batch).loss
    out = lean(**batch, fused_lm_head=True)
    loss = -out.log_probs.sum() / out.label_mask.sum()  # how SFTTrainer.compute_loss reduces it
    assert torch.allclose(out.loss, reference, atol=1e-5) and torch.allclose(loss, reference, atol=1e-5)
    reference.backward()
    loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), lean.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
    # the sampled metrics estimate the means over all labelled positions (4 of them scored)
    assert out.entropy.sum() / out.label_mask.sum() > 0
    assert int((out.entropy != 0).sum()) == 4
    # without fused_lm_head the model is the plain one (generation unchanged)
    assert torch.allclose(lean(**batch).loss, reference, atol=1e-5)


def test_padding_free_batch_equals_padded_batch(tiny_model_dir):
    """TRL's padding-free collator: the same per-token labels as the padded rows (first token of each row
    masked), and the same loss: no row attends to another under SDPA."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = _model(tiny_model_dir)
    rows, labels = _batch(0)
    examples = [{"input_ids": r.tolist(), "labels": lb.tolist()} for r, lb in zip(rows, labels)]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    real = padded["attention_mask"].bool()
    expected = padded["labels"].clone()
    expected[:, 0] = -100  # padding-free masks each row's first token (it has no context in the row)
    assert torch.equal(flat["labels"][0], expected[real])
    with torch.no_grad():
        a = model(**padded).logits[real]
        # use_cache=False, as SFTTrainer passes: transformers finds the packed rows from position_ids
        b = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
        assert torch.allclose(a, b, atol=1e-4), "a row saw another row's tokens"
        padded["labels"][:, 0] = -100
        assert torch.allclose(model(**padded).loss, model(**{k: flat[k] for k in ("input_ids", "position_ids", "labels")}, use_cache=False).loss, atol=1e-5)


def test_config_engine_fields_and_auto_words(tmp_path):
    config = apply_overrides(Config(), ["training.batching=padding_free", "training.gradient_checkpointing=on"])
    assert config.training.batching == "padding_free" and config.training.gradient_checkpointing is True
    assert check_value("training", "gradient_checkpointing", "auto") is None
    assert check_value("training", "gradient_checkpointing", "false") is False
    text = config_to_yaml(Config())
    assert "gradient_checkpointing: auto" in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path).training.gradient_checkpointing is None
    with pytest.raises(Exception):
        check_value("training", "batching", "zigzag")


def test_auto_choices_cpu():
    from lora_tui.core.plan.run_plan import choose_engine
    from lora_tui.core.train.engine import sft_engine_kwargs

    choice = choose_engine(Config(), "cpu")
    assert choice.batching == "grouped" and choice.attention == "sdpa" and "lean_head" in choice.kernels
    assert "liger" not in choice.kernels and set(choice.reasons) >= {"batching", "attention", "kernels"}
    assert sft_engine_kwargs(choice, 512)["train_sampling_strategy"] == "group_by_length"
    packed = choose_engine(apply_overrides(Config(), ["training.batching=packed"]), "cpu")
    assert sft_engine_kwargs(packed, 512) == {"packing": True, "packing_strategy": "bfd", "max_length": 512}


def test_checkpointing_auto_follows_the_estimate():
    from types import SimpleNamespace

    from lora_tui.core.plan.workload import choose_batch

    def choose_checkpointing(config, hardware, device):  # checkpointing=auto is decided with the batch
        batch = choose_batch(config, hardware, device)
        return batch.gradient_checkpointing, batch.reasons["gradient_checkpointing"]

    config = apply_overrides(Config(), ["data.max_seq_len=512", "training.micro_batch=8"])
    roomy = SimpleNamespace(gpus=[], ram_available=1024**4)
    tight = SimpleNamespace(gpus=[], ram_available=4 * 1024**3)
    assert choose_checkpointing(config, roomy, "cpu")[0] is False
    on, why = choose_checkpointing(config, tight, "cpu")
    assert on is True and "GiB" in why
    config.training.gradient_checkpointing = False
    assert choose_checkpointing(config, tight, "cpu") == (False, "set in the config")


def test_memory_fields_error_percent():
    from lora_tui.core.plan.memory_record import error_pct, memory_fields

    assert error_pct(110, 100) == 10.0 and error_pct(None, 5) is None
    fields = memory_fields({"comparable_bytes": 90, "measure": "peak_rss"}, 100)
    assert fields["memory_error_pct"] == -10.0 and fields["memory_peak_bytes"] == 100


@pytest.mark.gpu
def test_liger_on_cuda_when_installed():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from lora_tui.core.machine.kernels import liger_available
    from lora_tui.core.plan.run_plan import choose_engine

    choice = choose_engine(Config(), "cuda")
    assert ("liger" in choice.kernels) == liger_available()


@pytest.mark.parametrize("batching", ["padding_free", "packed"])
def test_batching_modes_train_lora_only(tiny_model_dir, tmp_path, batching):
    """Each batching mode goes through TRL's own collator / packing with our tokenised rows: LoRA weights
    move, base weights do not, the lean head is the one scoring."""
    import json

    import torch
    from trl import SFTTrainer

    from lora_tui.core.plan.run_plan import choose_engine
    from lora_tui.core.train.engine import install_lean_head
    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.training import build_datasets, build_model, sft_config

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?" + " more" * (i % 7)},
                                                     {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
                            for i in range(16)))
    config = apply_overrides(Config(), [f"model.name={tiny_model_dir}", f"data.train={data}", "data.validation=",
                                        "data.val_fraction=0", "data.max_seq_len=64", "training.micro_batch=4",
                                        "training.grad_accum=1", "training.learning_rate=0.01", "training.max_steps=2",
                                        "training.save_steps=0", "training.eval_steps=0", "lora.r=4",
                                        f"training.batching={batching}"])
    choice = choose_engine(config, "cpu")
    assert choice.batching == batching
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, _ = build_datasets(config, tokenizer)
    model, _ = build_model(config, "cpu", "fp32", choice)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = SFTTrainer(model=model, args=sft_config(config, RunDirectory(tmp_path / "run"), "cpu", "fp32", False, choice),
                         train_dataset=train_ds, processing_class=tokenizer)
    assert trainer.padding_free
    assert install_lean_head(trainer.model, 1000)
    trainer.train()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before if "lora_" not in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
