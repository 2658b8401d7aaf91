"""Tiny random-weight models of each family, built from transformers' own config classes (no download).

``build_tiny(family, out_dir, tokenizer_dir)`` writes a model directory (config.json, safetensors, the
tokenizer) with hidden size 64 and 2 layers: small enough that a training step takes milliseconds on a
CPU, real enough that every transformers / peft / trl / llama.cpp code path is the one a user's model of
that family takes (the same layer types, sliding windows, soft-capping, sinks, experts, linear-attention
layers, per-layer embeddings). The tokenizer is the given one (the embedded model's) with the family's
chat template and end-of-turn token added, so chat and exports stop where that family stops.

This is the family matrix's model builder (benchmarks/family_matrix.py, tests/test_families.py); it lives
in the package so a benchmark and the tests share it, and so a user can check a new transformers release
against the matrix without a download. Must not import torch / transformers at module top.
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_tui.core.model.families import FAMILIES, family

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE, WINDOW = 64, 2, 4, 2, 16, 128, 32
TINY_FAMILIES = tuple(f.key for f in FAMILIES)

# Chat templates in each family's own shape (role headers and end-of-turn marker), short enough to read.
_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_TEMPLATES = {
    "<|eot_id|>": ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
                   " + m['content'] + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "</s>": ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + '</s>' }}"
             "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}"),
    "<end_of_turn>": ("{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant'"
                      " else m['role']) + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
    "<|end|>": ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
    "<|endoftext|>": ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] }}"
                      "{% if m['role'] == 'assistant' %}{{ '<|endoftext|>' }}{% endif %}{{ '\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
    "<|end_of_text|>": ("{% for m in messages %}{{ '<|start_of_role|>' + m['role'] + '<|end_of_role|>' + m['content']"
                        " + '<|end_of_text|>\n' }}{% endfor %}"
                        "{% if add_generation_prompt %}{{ '<|start_of_role|>assistant<|end_of_role|>' }}{% endif %}"),
    "<|return|>": ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|start|>assistant<|channel|>final<|message|>'"
                   " + m['content'] + ('<|return|>' if loop.last else '<|end|>') }}{% else %}{{ '<|start|>' + m['role']"
                   " + '<|message|>' + m['content'] + '<|end|>' }}{% endif %}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start|>assistant<|channel|>final<|message|>' }}{% endif %}"),
    "<|im_end|>": _CHATML,
}
_HEADER_TOKENS = {"<|eot_id|>": ["<|start_header_id|>", "<|end_header_id|>"], "<end_of_turn>": ["<start_of_turn>"],
                  "<|end_of_text|>": ["<|start_of_role|>", "<|end_of_role|>"],
                  "<|return|>": ["<|start|>", "<|channel|>", "<|message|>", "<|end|>"]}
_SLIDING = ["sliding_attention", "full_attention"]

# Per family: (config class, its arguments beyond the shared shape). Every family-specific part is kept,
# at tiny sizes: sliding windows, soft-capping, sinks, experts, linear attention, per-layer embeddings.
_SHAPES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {"head_dim": HEAD_DIM}),
    "mistral": ("MistralConfig", {"head_dim": HEAD_DIM, "sliding_window": None}),
    "ministral": ("Ministral3Config", {"head_dim": HEAD_DIM, "max_position_embeddings": 262144}),  # its YaRN factor
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": HEAD_DIM}),
    "qwen3_5": ("Qwen3_5TextConfig", {"head_dim": HEAD_DIM, "layer_types": ["linear_attention", "full_attention"],
                                      "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                                      "linear_num_key_heads": 2, "linear_num_value_heads": 4}),
    "qwen3_moe": ("Qwen3MoeConfig", {"head_dim": HEAD_DIM, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 32}),
    "gemma2": ("Gemma2Config", {"head_dim": HEAD_DIM, "sliding_window": WINDOW, "query_pre_attn_scalar": HEAD_DIM,
                                "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "layer_types": _SLIDING}),
    "gemma3": ("Gemma3TextConfig", {"head_dim": HEAD_DIM, "sliding_window": WINDOW, "query_pre_attn_scalar": HEAD_DIM,
                                    "layer_types": _SLIDING}),
    "gemma4": ("Gemma4TextConfig", {"head_dim": HEAD_DIM, "global_head_dim": 32, "sliding_window": WINDOW,
                                    "layer_types": _SLIDING, "hidden_size_per_layer_input": 16,
                                    "final_logit_softcapping": 30.0}),
    "smollm3": ("SmolLM3Config", {"no_rope_layer_interval": 2}),
    "phi3": ("Phi3Config", {}),
    "olmo2": ("Olmo2Config", {}),
    "olmo3": ("Olmo3Config", {"sliding_window": WINDOW, "layer_types": _SLIDING}),
    "granite": ("GraniteConfig", {"embedding_multiplier": 12.0, "logits_scaling": 8.0, "residual_multiplier": 0.22,
                                  "attention_multiplier": 0.0625}),
    "gpt_oss": ("GptOssConfig", {"head_dim": HEAD_DIM, "num_local_experts": 4, "num_experts_per_tok": 2,
                                 "intermediate_size": 64, "sliding_window": WINDOW, "layer_types": _SLIDING,
                                 "max_position_embeddings": 131072}),  # its YaRN factor
}


def family_tokenizer(key: str, tokenizer_dir: str | Path):
    """The given tokenizer with the family's end-of-turn token (as EOS), its header tokens and chat template."""
    from transformers import AutoTokenizer

    eot = family(key).end_of_turn
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    new = [t for t in [eot, *_HEADER_TOKENS.get(eot, [])] if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    tokenizer.eos_token = eot  # the pad token stays the given one's (labels never come from pad ids)
    tokenizer.chat_template = _TEMPLATES[eot]
    return tokenizer


def tiny_config(key: str, tokenizer):
    """The family's transformers config at the tiny shape, for ``tokenizer``'s vocabulary and special ids."""
    import transformers

    class_name, extra = _SHAPES[key]
    shared = dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=512,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=key in ("gemma2", "gemma3", "gemma4", "smollm3", "llama"))
    if key == "gemma4":
        shared["vocab_size_per_layer_input"] = len(tokenizer)
    return getattr(transformers, class_name)(**{**shared, **extra})


def build_tiny(key: str, out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight model of family ``key`` to ``out_dir`` (created) and return it."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = family_tokenizer(key, tokenizer_dir)
    config = tiny_config(key, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_family.json").write_text(json.dumps({"family": key, "config_class": _SHAPES[key][0],
                                                      "params": sum(p.numel() for p in model.parameters())}))
    return out
