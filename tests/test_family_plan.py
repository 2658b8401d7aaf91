"""Attention and batching per model family (issue 23 item 2), on tiny random models of each family.

The family table (core/model/families.py) is checked against transformers' own model classes; the run plan
picks what each family supports and says why; a packed micro-batch keeps its rows apart in every family
that may pack (the row's logits equal the row run alone), and Qwen3.5's linear attention, which does not,
is kept padded (and an explicit packing refused in one line)."""

from __future__ import annotations

import pytest

from lora_tui.core.config import Config, apply_overrides
from lora_tui.core.model.families import FAMILIES, family
from lora_tui.core.plan.engine_choice import DeviceFacts, engine_fields
from lora_tui.core.plan.family_rules import family_problem

KEYS = [f.key for f in FAMILIES]


def _config(model_dir, *overrides: str) -> Config:
    return apply_overrides(Config(), [f"model.name={model_dir}", *overrides])


@pytest.mark.parametrize("key", KEYS)
def test_the_table_says_what_transformers_says_about_sdpa(key, tiny_family):
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    import transformers

    model_type = AutoConfig.from_pretrained(tiny_family(key)).model_type
    cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    fam = family(key)
    assert model_type in fam.model_types
    assert bool(fam.needs) == (not cls._supports_sdpa), f"{cls.__name__}._supports_sdpa = {cls._supports_sdpa}"
    for choice in fam.cuda_attention:
        assert getattr(cls, {"flex_attention": "_supports_flex_attn"}.get(choice, "_supports_flash_attn")), choice


@pytest.mark.parametrize("key", ["gemma2", "gpt_oss"])
def test_families_without_sdpa_train_with_what_computes_them_and_say_why(key, tiny_family):
    config = _config(tiny_family(key))
    attention, _, reasons = engine_fields(config, DeviceFacts("cpu"))
    assert attention == "eager" and "SDPA has no attention" in reasons["attention"]
    gpu = DeviceFacts("cuda", (9, 0), True, flash_attention="flash_attention_2")
    attention, _, reasons = engine_fields(config, gpu)
    # gpt-oss: the FlashAttention 2 package drops attention sinks; flex attention keeps them
    assert attention == ("flash_attention_2" if key == "gemma2" else "flex_attention"), reasons
    assert family_problem(config) is None
    refused = family_problem(_config(tiny_family(key), "training.attention=sdpa"))
    assert refused.startswith("training.attention=sdpa:") and "Fix: training.attention=auto" in refused
    assert "\n" not in refused


def test_llama_keeps_the_device_choice(tiny_family):
    config = _config(tiny_family("llama"))
    assert engine_fields(config, DeviceFacts("cpu"))[0] == "sdpa"
    gpu = DeviceFacts("cuda", (9, 0), True, flash_attention="flash_attention_2")
    assert engine_fields(config, gpu)[:2] == ("flash_attention_2", "token_budget")


def test_linear_attention_keeps_rows_apart_on_a_gpu_and_refuses_packing(tiny_family):
    config = _config(tiny_family("qwen3_5"))
    gpu = DeviceFacts("cuda", (9, 0), True, flash_attention="flash_attention_2")
    _, batching, reasons = engine_fields(config, gpu)
    assert batching == "grouped" and "linear-attention" in reasons["batching"]
    for mode in ("packed", "padding_free", "token_budget"):
        refused = family_problem(_config(tiny_family("qwen3_5"), f"training.batching={mode}"))
        assert refused.startswith(f"training.batching={mode}:") and "Fix: training.batching=grouped" in refused


def test_a_refused_setting_is_refused_before_the_run_directory_exists(tiny_family, train_file, tmp_path):
    from lora_tui.core.run.launcher import start_run
    from lora_tui.core.run.runs import RunError

    config = _config(tiny_family("gemma2"), f"data.train={train_file}", "training.attention=sdpa")
    with pytest.raises(RunError, match="training.attention=sdpa: Gemma 2 needs attention logit soft-capping"):
        start_run(config, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("key", KEYS)
def test_a_packed_row_sees_only_itself(key, tiny_family):
    """Two rows packed into one (position ids restarting, no attention mask: what TRL's padding-free and packing
    collators hand the model, use_cache off as its trainer sets it), with the attention the plan picks on a CPU.
    Rows are longer than the tiny models' sliding window (32), so windows and packing meet."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = tiny_family(key)
    attention = engine_fields(_config(model_dir), DeviceFacts("cpu"))[0]
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention).train()
    torch.manual_seed(0)
    first, second = torch.randint(5, 1000, (1, 40)), torch.randint(5, 1000, (1, 40))
    packed = torch.cat([first, second], 1)
    positions = torch.cat([torch.arange(40), torch.arange(40)])[None]
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, 40:]
    same = torch.allclose(alone, together, atol=1e-4)
    assert same == family(key).packs_rows, (f"{key}: max difference {float((alone - together).abs().max()):.2e}; "
                                            f"the family table says packs_rows={family(key).packs_rows}")


def test_a_model_of_only_linear_attention_layers_generates(tmp_path, tokenizer_dir):
    """Qwen3.5's own layout for 2 layers is all linear attention: transformers' cache then has no attention layer
    and generation raised `get_mask_sizes can only be called on Attention layers` (chat, the merge check). Loaded
    through load_base_model it generates without the cache, token for token what a full forward predicts."""
    import torch
    from transformers import AutoModelForCausalLM

    from lora_tui.core.model.models import load_base_model
    from lora_tui.core.model.tiny import family_tokenizer, tiny_config

    tokenizer = family_tokenizer("qwen3_5", tokenizer_dir)
    config = tiny_config("qwen3_5", tokenizer)
    config.layer_types = ["linear_attention", "linear_attention"]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = load_base_model(str(tmp_path)).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    expected = ids
    with torch.no_grad():
        for _ in range(4):
            expected = torch.cat([expected, model(expected).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, expected)
