"""Helpers (no tests) for the GGUF tests: the family matrix's tiny models made sensitive to layout errors, a finished
fake run with a LoRA adapter on one, the merged model's reference log-probabilities, and llama.cpp's next-token
choices against them. tests/conftest.py builds each run once per session (``gguf_run``); the family and adapter
GGUF tests share them (the K-quant tests their reference and llama.cpp comparison, benchmarks/gguf_families.py
the runs)."""

from __future__ import annotations

import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Where the matrix's tiny config differs from every published model of the family in a way llama.cpp hard-codes
# (and gguf_support refuses): Qwen3-30B-A3B renormalises its top-k expert weights; SmolLM3-3B skips rope every
# 4th layer (4 layers, so one of them does).
PUBLISHED = {"qwen3_moe": {"norm_topk_prob": True},
             "smollm3": {"num_hidden_layers": 4, "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0],
                         "layer_types": ["full_attention"] * 4}}
# Variants of a matrix family: (family, config values). Phi-4-mini: the matrix's Phi-3 classes with Phi-4-mini's
# rope (LongRoPE from 4096 to 131072 positions, 3/4 of each head rotated) and tied embeddings, its factors drawn at
# random so that a lost one shows. Gemma 4 as its small models are built: the last layers reuse the KV of the last
# sliding and full-attention layers before them and have double-wide MLPs, full-attention layers take K as V (one
# KV head, wider heads): every Gemma 4 part llama.cpp's gemma4 reads, in 4 layers.
VARIANTS = {
    "phi4_mini": ("phi3", {
        "tie_word_embeddings": True, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                            "original_max_position_embeddings": 4096,
                            "short_factor": [1.0, 1.3, 2.1, 0.8, 1.7, 3.0], "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]}}),
    "gemma4_shared_kv": ("gemma4", {
        "num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention"] * 2, "num_kv_shared_layers": 2,
        "use_double_wide_mlp": True, "attention_k_eq_v": True, "global_head_dim": 32, "num_global_key_value_heads": 1}),
}


def sensitive_tiny(family: str, out: Path, tokenizer_dir: Path) -> Path:
    """The matrix's tiny model of ``family`` (its config and tokenizer, lora_tui/core/model/tiny.py) with the
    published values above, weights drawn with std 0.2 and every vector moved off its neutral value (norms 1 or
    Gemma's 0, biases 0, Gemma 4's layer scalars 1), so that attention is far from uniform and a lost norm offset,
    a wrong rope layout, sliding window, soft-cap or expert order moves llama.cpp's next-token choices (at
    transformers' default std 0.02 a llama file without llama.cpp's rope layout still chose the same next token
    everywhere)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lora_tui.core.model.tiny import family_tokenizer, tiny_config

    family, published = VARIANTS.get(family, (family, PUBLISHED.get(family, {})))
    tokenizer = family_tokenizer(family, tokenizer_dir)
    config = tiny_config(family, tokenizer)
    if hasattr(config, "kv_sharing_modes"):  # Gemma 4 derives its per-layer shapes when built: build it again
        values = {k: v for k, v in config.to_dict().items() if k != "per_layer_config"}
        config = type(config).from_dict({**values, **published})
    else:
        for key, value in published.items():
            setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(param + noise * 0.1 if param.dim() == 1 else noise * 0.2)
        for name, buffer in model.named_buffers():
            if name.endswith("layer_scalar"):  # a buffer, saved with the weights
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_run(root: Path, family: str, tokenizer_dir: Path) -> Path:
    """A finished fake run on ``family``'s tiny model with a small LoRA adapter on all linear layers."""
    from peft import LoraConfig

    base = sensitive_tiny(family, root / "base-model", tokenizer_dir)
    return add_run(root, base, "tiny-run", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                      task_type="CAUSAL_LM"), scale=0.05, seed=1)


def add_run(root: Path, base: Path, name: str, lora, *, scale: float, seed: int) -> Path:
    """A finished fake run named ``name`` on ``base`` whose adapter (``lora``: a peft LoraConfig) has random B."""
    import shutil

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from lora_tui.core.config import load_config, save_config
    from tests.support.chat import make_fake_run

    run = Path(make_fake_run(root, base, name=name, with_adapter=False))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(run / "adapter")
    for path in base.glob("*"):  # the tokenizer files, as the trainer saves them beside the adapter
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(path, run / "adapter" / path.name)
    config = load_config(run / "config.yaml")
    config.data.train, config.data.validation = str(ROOT / "sample_data/train.jsonl"), str(ROOT / "sample_data/valid.jsonl")
    save_config(config, run / "config.yaml")
    return run


def attention_mlp_run(root: Path, run: Path) -> Path:
    """A second finished run on ``run``'s base whose adapter covers attention and the MLP only (the layers every
    llama.cpp architecture applies a LoRA to; Gemma 4's all-linear adapter also takes its per-layer projection)."""
    from peft import LoraConfig

    from lora_tui.core.config import load_config

    base = Path(load_config(run / "config.yaml").model.name)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return add_run(root, base, "attention-mlp-run", LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                task_type="CAUSAL_LM"), scale=0.05, seed=2)


CONVERSATION = [{"role": "user", "content": "Why is the sky blue? Then count 1 2 3 and name three colours."},
                {"role": "assistant", "content": "Sunlight scatters off the air, blue most: 1, 2, 3; red, green, blue."}]


def merged_reference(run: Path):
    """(merged model, tokenizer, token ids of one conversation, the merged model's log-probs at each position)."""
    import torch

    from lora_tui.core.export.artefacts import load_merged
    from lora_tui.core.run.adapters import find_adapter

    model, tokenizer, _ = load_merged(find_adapter(run, allow_checkpoint=False), "float32")
    ids = tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model.eval()(torch.tensor([ids])).logits[0].float(), -1)
    return model, tokenizer, ids, logp


def llamacpp_against(reference, gguf_path: Path, lora: Path | None = None) -> tuple[float, float]:
    """(share of positions where llama.cpp and the merged model pick the same next token, mean |Δ log p|)
    over the reference conversation, fed as the same token ids to both; ``lora``: a LoRA GGUF llama.cpp applies."""
    from lora_tui.core.export.llamacpp import LlamaCppModel

    _, _, ids, logp = reference
    positions = list(range(1, len(ids)))
    cpp = LlamaCppModel(gguf_path, n_ctx=512, lora=lora)
    try:
        got, tops = cpp.score(ids, positions)[:2]
    finally:
        cpp.close()
    pairs = [(float(logp[t - 1, ids[t]]), g, int(logp[t - 1].argmax()) == top)
             for t, g, top in zip(positions, got, tops) if not math.isnan(g)]
    assert len(pairs) > 0.9 * len(positions)
    return sum(same for *_, same in pairs) / len(pairs), sum(abs(a - b) for a, b, _ in pairs) / len(pairs)
