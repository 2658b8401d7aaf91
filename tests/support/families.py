"""Tiny random-weight models of the families people fine-tune (issue 23), built from transformers' own
config classes with no download: hidden 64, 2 layers, the embedded model's tokenizer and chat template.

``FAMILIES`` names them; ``build_tiny(family, out_dir)`` writes one as a model folder (safetensors, config,
tokenizer) that loads with ``AutoModelForCausalLM`` alone. Each keeps what makes its family different
(Gemma's 1+w norms, soft-capping and sliding windows, Phi-3's fused projections, Qwen3.5's linear-attention
layers, the MoE experts, gpt-oss's attention sinks, Granite's multipliers) at the smallest size that still
exercises it; norms and biases are drawn at random so that a lost offset or bias shows in the outputs.

Shared by the family matrix (H2) and the per-family GGUF tests: extend ``_SHAPES`` for a new family.
Must not: download anything, or train.
"""

from __future__ import annotations

from pathlib import Path

# family -> (transformers config class, model class, config overrides beyond the common tiny shape)
_SHAPES: dict[str, tuple[str, str, dict]] = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {
        "tie_word_embeddings": True,  # Llama 3.2 1B / 3B
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None, "head_dim": 16}),
    "ministral": ("MinistralConfig", "MinistralForCausalLM", {  # Ministral-8B-2410: its window is its context
        "head_dim": 16, "sliding_window": 2048, "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000000.0}}),
    "ministral3": ("Ministral3Config", "Ministral3ForCausalLM", {  # Ministral 3 (3B / 8B / 14B), yarn rope
        "head_dim": 16, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0,
                                            "original_max_position_embeddings": 128, "beta_fast": 32.0,
                                            "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                                            "llama_4_scaling_beta": 0.1}}),
    "qwen2_5": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32, "tie_word_embeddings": True}),
    "qwen3_5": ("Qwen3_5TextConfig", "Qwen3_5ForCausalLM", {  # hybrid: one Gated DeltaNet layer, one attention
        "head_dim": 32, "layer_types": ["linear_attention", "full_attention"], "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        "tie_word_embeddings": True}),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", {
        "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {
        "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {
        "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16,
        "layer_types": ["sliding_attention", "full_attention"]}),
    "gemma4": ("Gemma4TextConfig", "Gemma4ForCausalLM", {  # Gemma 4 E2B-like: per-layer embeddings
        "head_dim": 16, "global_head_dim": 32, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"], "hidden_size_per_layer_input": 16,
        "vocab_size_per_layer_input": None, "num_kv_shared_layers": 0}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {  # 4 layers: the 4th has no rope, as in SmolLM3-3B
        "num_hidden_layers": 4, "no_rope_layer_interval": 4}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),  # Phi-3-mini: fused qkv_proj and gate_up_proj
    "phi4": ("Phi3Config", "Phi3ForCausalLM", {  # Phi-4-mini: the same classes, partial rotary, tied
        "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                         "partial_rotary_factor": 0.75}}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", {
        "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {
        "embedding_multiplier": 12.0, "logits_scaling": 8.0, "residual_multiplier": 0.22,
        "attention_multiplier": 0.0078125, "tie_word_embeddings": True}),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", {  # gpt-oss-20b's rope: yarn x32 from 4096, not truncated
        "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                            "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096}}),
}
FAMILIES: tuple[str, ...] = tuple(_SHAPES)
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048,
              initializer_range=0.2)  # attention far from uniform, so a wrong rope, window or scale shows


def _embedded_tokenizer_dir() -> Path:
    from lora_tui.core.model.embedded import ensure_embedded_model

    return Path(ensure_embedded_model())


def tiny_config(family: str, tokenizer):
    """The transformers config of ``family``'s tiny model for ``tokenizer``."""
    import transformers

    config_class, model_class, overrides = _SHAPES[family]
    kwargs = {**COMMON, **overrides}
    if kwargs.get("vocab_size_per_layer_input", 0) is None:
        kwargs["vocab_size_per_layer_input"] = len(tokenizer)
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **kwargs)
    config.architectures = [model_class]
    return config


def build_tiny(family: str, out_dir: str | Path, *, tokenizer_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write ``family``'s tiny random model (fp32 safetensors) and the tokenizer into ``out_dir``; returns it."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    if family not in _SHAPES:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or _embedded_tokenizer_dir())
    config = tiny_config(family, tokenizer)
    torch.manual_seed(seed)
    model = getattr(transformers, _SHAPES[family][1])(config).float()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # Norms start at 1 (or 0 for Gemma's 1+w) and biases at 0: values that hide a lost offset or bias.
            if param.dim() == 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
