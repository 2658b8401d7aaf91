"""Micro-batches filled to a token budget (issue 17 item 1), through TRL's own packing and collator.

Each row attends only to itself (position ids -> transformers' packed-sequence mask under sdpa), and the
loss is normalised over the step's label tokens, so a step's gradient does not depend on how its rows
were grouped into micro-batches. Tiny random model, fp32, CPU.
"""

from __future__ import annotations

import json

import pytest

from lora_tui.core.config import Config, apply_overrides


def _data(tmp_path, n: int = 6):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?" + " more" * (3 * i)},
                                                     {"role": "assistant", "content": f"Answer {i}." + " yes" * i}]}) + "\n"
                            for i in range(n)))
    return data


def _config(tiny_model_dir, data, *overrides):
    return apply_overrides(Config(), [f"model.name={tiny_model_dir}", f"data.train={data}", "data.validation=",
                                      "data.val_fraction=0", "data.max_seq_len=128", "training.batching=token_budget",
                                      "training.gradient_checkpointing=false", "training.save_steps=0",
                                      "training.eval_steps=0", "lora.r=4", "lora.dropout=0", *overrides])


def _setup(tiny_model_dir, tmp_path, tokens: int):
    """SFTTrainer as the recipe builds it, with bins of ``tokens`` tokens."""
    import torch
    from trl import SFTTrainer

    from lora_tui.core.train.engine import install_lean_head
    from lora_tui.core.model.models import load_tokenizer
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.training import build_datasets, build_model, sft_config

    config = _config(tiny_model_dir, _data(tmp_path), f"training.tokens_per_batch={tokens}")
    plan = decide_run_plan(config, DeviceFacts())
    assert plan.batching == "token_budget" and plan.tokens_per_batch == tokens and plan.micro_batch == 1
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, _ = build_datasets(config, tokenizer)
    torch.manual_seed(0)
    model, _ = build_model(config, "cpu", "fp32", plan)
    trainer = SFTTrainer(model=model, args=sft_config(config, RunDirectory(tmp_path / f"run{tokens}"), "cpu", "fp32", False, plan),
                         train_dataset=train_ds, processing_class=tokenizer)
    assert install_lean_head(trainer.model, 1000)
    return trainer, train_ds


def test_a_packed_row_sees_only_itself(tiny_model_dir, tmp_path):
    """Logits of each row inside a packed micro-batch equal the logits of that row alone."""
    import torch

    trainer, _ = _setup(tiny_model_dir, tmp_path, 512)
    model = trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    assert len(starts) > 3, "the bin holds several rows"
    assert batch["input_ids"].shape[1] <= 512
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        # Control: the same tokens as one plain causal sequence do see each other (the check can fail).
        leaky = model(input_ids=batch["input_ids"]).logits[0]
    for s, e in zip(starts, starts[1:]):
        with torch.no_grad():
            alone = model(input_ids=batch["input_ids"][:, s:e]).logits[0]
        torch.testing.assert_close(packed[s:e], alone, atol=1e-5, rtol=0)
    s, e = starts[1], starts[2]
    assert (leaky[s:e] - packed[s:e]).abs().max() > 1e-3


def _step_gradient(trainer) -> dict:
    """The gradient of one optimiser step over every bin, as transformers' training loop computes it
    (get_batch_samples counts the step's label tokens; training_step scales and backpropagates)."""
    model = trainer.model
    model.zero_grad()
    bins = len(trainer.train_dataset)
    batches, items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), bins, trainer.args.device)
    assert len(batches) == bins
    trainer.current_gradient_accumulation_steps = bins
    for batch in batches:
        trainer.training_step(model, batch, items)
    return bins, {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def test_the_step_gradient_does_not_depend_on_how_rows_are_grouped(tiny_model_dir, tmp_path):
    """The same rows as several micro-batches (small budget) or as one (large budget): the same gradient."""
    import torch

    small, rows = _setup(tiny_model_dir, tmp_path, 96)
    large, _ = _setup(tiny_model_dir, tmp_path, 4096)
    n_small, g_small = _step_gradient(small)
    n_large, g_large = _step_gradient(large)
    assert n_small >= 2 and n_large == 1
    assert sum(len(b["seq_lengths"]) for b in small.train_dataset) == len(rows), "every row is whole, in one bin"
    assert g_small.keys() == g_large.keys()
    for k in g_small:
        torch.testing.assert_close(g_small[k], g_large[k], rtol=1e-4, atol=1e-7)


def test_token_budget_trains_lora_only(tiny_model_dir, tmp_path):
    """A short token-budget run through the trainer: LoRA weights move, base weights do not."""
    import torch

    trainer, _ = _setup(tiny_model_dir, tmp_path, 160)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.args.max_steps = 2
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before if "lora_" not in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)


@pytest.mark.parametrize("tokens", [None, 3000], ids=["auto", "set"])
def test_the_batch_is_stated_in_tokens(tokens):
    from lora_tui.core.plan.run_plan import DeviceFacts, decide_run_plan

    config = apply_overrides(Config(), ["training.batching=token_budget", "data.max_seq_len=256", "training.grad_accum=2",
                                        *([f"training.tokens_per_batch={tokens}"] if tokens else [])])
    plan = decide_run_plan(config, DeviceFacts())
    if tokens:
        assert plan.tokens_per_batch == 3000
    else:  # auto: the effective batch of 4 x grad_accum rows of max_seq_len, split to fit
        assert plan.tokens_per_batch % 256 == 0 and plan.tokens_per_step == 4 * 2 * 256
    assert plan.batch.describe() == f"{plan.tokens_per_batch} tokens x {plan.grad_accum} = {plan.tokens_per_step} tokens per step"
    assert plan.tokens_per_step == plan.tokens_per_batch * plan.grad_accum


def test_the_token_budget_is_shown_in_tokens_where_the_batch_is_shown():
    from types import SimpleNamespace

    from lora_tui.commands.progress import _engine_line
    from lora_tui.core.run.model_card import _batch_row
    from lora_tui.core.run.started import Started

    started = Started.from_event({"micro_batch": 1, "grad_accum": 4, "tokens_per_batch": 4096, "batching": "token_budget",
                                  "attention": "sdpa", "kernels": ["lean_head"], "engine_reasons": {"micro_batch": "auto: fits"}})
    assert "batch 4096 tokens x 4 = 16384 tokens per step (auto: fits)" in _engine_line(started)
    row = _batch_row(SimpleNamespace(micro_batch=None, grad_accum=4), started)
    assert "4096 tokens x 4 = 16384 tokens per step" in row and "token budget auto" in row


@pytest.mark.gpu
def test_a_packed_row_sees_only_itself_on_cuda(tiny_model_dir):
    """On a GPU with the attention the plan picks there (FlashAttention varlen when installed, else SDPA's
    packed-sequence mask): each packed row's logits equal the row alone, within the kernel's precision."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from lora_tui.core.plan.engine_choice import choose_attention

    attention, _ = choose_attention("auto", "cuda", torch.cuda.get_device_capability(0))
    dtype = torch.bfloat16 if attention.startswith("flash") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype, attn_implementation=attention).cuda().eval()
    torch.manual_seed(0)
    rows = [torch.randint(5, 1000, (n,)).tolist() for n in (37, 5, 120, 64, 9)]
    packed = pack_dataset(Dataset.from_dict({"input_ids": rows, "labels": rows}), 512, "bfd")
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([packed[0]])
    batch = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items() if k != "labels"}
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    assert len(starts) == len(rows) + 1
    with torch.no_grad():
        out = model(**batch, use_cache=False).logits[0].float()
        for s, e in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, s:e], use_cache=False).logits[0].float()
            torch.testing.assert_close(out[s:e], alone, atol=1e-5 if dtype == torch.float32 else 3e-2, rtol=0)
