"""Which model families the GGUF export writes, and what each needs beyond the common Llama-like layout.

Tensor names come from the ``gguf`` package's own map (``get_tensor_name_map``, kept in step with
llama.cpp); this module holds only what that map cannot say, per family, each item checked by loading
the written file in llama.cpp (tests/test_export_gguf_families.py):

- ``rope="norm"``: llama.cpp applies rotary embeddings to interleaved pairs for these architectures,
  transformers to halves, so q/k rows are permuted (Llama, Mistral, SmolLM3, Granite, Ministral 3);
- ``norm_offset``: Gemma's RMSNorm multiplies by (1 + w), llama.cpp by w: w + 1 is written;
- ``hparams``: metadata llama.cpp reads for the family (soft-capping, sliding windows and their
  per-layer pattern, expert counts, Granite's multipliers, yarn, attention temperature);
- ``tensors``: tensors that are not one-to-one (MoE experts stacked as 3-D, gpt-oss's interleaved
  gate/up, attention sinks);
- ``refuse``: a config this llama.cpp would load but compute differently (a hard-coded layer pattern or
  scale that the model does not follow): one line saying why, before any loading;
- ``bare``: tensors llama.cpp names without a ``.weight`` suffix (Qwen3.5's ``ssm_a``).

Qwen3.5 (hybrid linear attention) and Gemma 4 have their own module, ``gguf_hybrid``.

A family that is not here gets one line from ``gguf_support`` naming what works instead.
Must not: import torch, gguf or numpy at module top, print, or write files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lora_tui.core.export import gguf_hybrid


@dataclass(frozen=True)
class Family:
    arch: str  # llama.cpp's architecture name (general.architecture)
    label: str
    rope: str = "neox"  # "norm": llama.cpp rotates interleaved pairs, so q/k rows are permuted
    norm_offset: float = 0.0
    hparams: Callable | None = None  # (writer, config) -> None
    tensors: Callable | None = None  # (hf_name, numpy array, config) -> [(hf-like name, array)] or None
    refuse: Callable | None = None  # (config) -> reason or None
    ropes: tuple[str, ...] = ("default", "linear", "llama3")  # rope scalings written for this family
    extra: Callable | None = None  # (config) -> [(llama.cpp tensor name, float32 array)] not in the state dict
    bare: tuple[str, ...] = ()  # llama.cpp tensor names (after "blk.N.") that take no ".weight" suffix
    lora: Callable | None = None  # (module, lora_A, lora_B, config) -> (A, B) in the base file's layout
    no_lora: tuple[str, ...] = ()  # modules llama.cpp multiplies without applying a LoRA adapter's product

    def reason(self, config) -> str | None:
        """Why this config cannot be written as this family (None: it can)."""
        rope = _rope_params(config)
        if isinstance(rope.get("full_attention"), dict):
            rope = rope["full_attention"]
        kind = rope.get("rope_type") or rope.get("type") or "default"
        if kind not in self.ropes:
            return f"its rope scaling '{kind}' is not written by the GGUF export (written: {', '.join(self.ropes)})"
        return self.refuse(config) if self.refuse else None


def _layer_types(config) -> list[str]:
    return list(getattr(config, "layer_types", None) or [])


def _rope_params(config, layer_type: str | None = None) -> dict:
    params = dict(getattr(config, "rope_parameters", None) or {})
    if layer_type and isinstance(params.get(layer_type), dict):
        return dict(params[layer_type])
    return params


def _swa(writer, config) -> None:
    """Sliding window and which layers use it (llama.cpp reads the per-layer pattern)."""
    types = _layer_types(config)
    if getattr(config, "sliding_window", None) and "sliding_attention" in types:
        writer.add_sliding_window(int(config.sliding_window))
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])


def _swa_rope(writer, config) -> None:
    """Gemma 3 / OLMo 3: sliding layers have their own rope base (the full layers' is the common one)."""
    sliding = _rope_params(config, "sliding_attention")
    if "rope_theta" in sliding:
        writer.add_rope_freq_base_swa(float(sliding["rope_theta"]))


def _alternating(config, first: str = "sliding_attention") -> bool:
    """Whether layers alternate sliding / full starting with ``first`` (a pattern llama.cpp hard-codes)."""
    other = "full_attention" if first == "sliding_attention" else "sliding_attention"
    return _layer_types(config) == [first if i % 2 == 0 else other for i in range(config.num_hidden_layers)]


def _yarn(writer, config) -> None:
    import gguf

    rope = _rope_params(config)
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    if rope.get("beta_fast") is not None:
        writer.add_rope_scaling_yarn_beta_fast(float(rope["beta_fast"]))
    if rope.get("beta_slow") is not None:
        writer.add_rope_scaling_yarn_beta_slow(float(rope["beta_slow"]))
    attn = rope.get("attention_factor", rope.get("attn_factor"))
    if attn is not None:
        writer.add_rope_scaling_yarn_attn_factor(float(attn))


def _experts(writer, config, count_key: str) -> None:
    writer.add_expert_count(int(getattr(config, count_key)))
    writer.add_expert_used_count(int(config.num_experts_per_tok))


# --- per-family metadata -------------------------------------------------------------------------

def _qwen3_moe_hparams(writer, config) -> None:
    _experts(writer, config, "num_experts")
    writer.add_expert_feed_forward_length(int(config.moe_intermediate_size))


def _gemma2_hparams(writer, config) -> None:
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
    writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    writer.add_sliding_window(int(config.sliding_window))


def _gemma3_hparams(writer, config) -> None:
    _swa_rope(writer, config)
    _swa(writer, config)
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def _olmo3_hparams(writer, config) -> None:
    _swa_rope(writer, config)
    _swa(writer, config)


def _granite_hparams(writer, config) -> None:
    writer.add_attention_scale(float(config.attention_multiplier))
    writer.add_embedding_scale(float(config.embedding_multiplier))
    writer.add_residual_scale(float(config.residual_multiplier))
    writer.add_logit_scale(float(config.logits_scaling))


def _gpt_oss_hparams(writer, config) -> None:
    # llama.cpp rounds YaRN's correction range outward; gpt-oss (truncate: false) does not: the rope of a few
    # dimensions differs a little (tiny model, f16: 96 % same next token, mean |Δ log p| 0.04; with truncate 100 %)
    _yarn(writer, config)
    _experts(writer, config, "num_local_experts")
    writer.add_expert_feed_forward_length(int(config.intermediate_size))
    writer.add_sliding_window(int(config.sliding_window))


def _longrope(config) -> dict | None:
    rope = _rope_params(config)
    return rope if (rope.get("rope_type") or rope.get("type")) in ("longrope", "su") else None


def _phi3_hparams(writer, config) -> None:
    import math

    # llama.cpp's phi3 applies a sliding window when this is above 0 (Phi-3-mini-4k: 2047; Phi-4-mini: none)
    writer.add_sliding_window(int(getattr(config, "sliding_window", None) or 0))
    rope = _longrope(config)
    if rope:  # Phi-3-128k / Phi-4-mini: per-frequency factors, and attention scaled for the longer context
        orig = int(rope.get("original_max_position_embeddings") or config.original_max_position_embeddings)
        scale = config.max_position_embeddings / orig
        writer.add_rope_scaling_orig_ctx_len(orig)
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)


def _phi3_extra(config):
    """LongRoPE's short and long per-frequency factors, as llama.cpp's rope_factors_short / _long."""
    import numpy as np

    rope = _longrope(config)
    if not rope:
        return []
    return [("rope_factors_long.weight", np.asarray(rope["long_factor"], dtype=np.float32)),
            ("rope_factors_short.weight", np.asarray(rope["short_factor"], dtype=np.float32))]


def _ministral3_hparams(writer, config) -> None:
    rope = _rope_params(config)
    _yarn(writer, config)
    writer.add_rope_scaling_yarn_log_mul(float(rope.get("mscale_all_dim", 0.0)))
    if rope.get("llama_4_scaling_beta") is not None:
        writer.add_attn_temperature_scale(float(rope["llama_4_scaling_beta"]))


# --- per-family tensors (names returned in transformers' spelling, mapped by the gguf package) ---

def _qwen3_moe_tensors(name: str, data, config):
    """transformers keeps each layer's experts fused: gate_up (E, 2I, H) and down (E, H, I)."""
    if name.endswith("mlp.experts.gate_up_proj"):
        half = data.shape[1] // 2
        stem = name[: -len("gate_up_proj")]
        return [(stem + "gate_proj", data[:, :half]), (stem + "up_proj", data[:, half:])]
    return None


def _gpt_oss_tensors(name: str, data, config):
    """gpt-oss multiplies activations by (E, H, 2I) with gate and up interleaved; llama.cpp wants (E, I, H)."""
    stem = name.rsplit(".", 1)[0] + "."
    if name.endswith("experts.gate_up_proj"):
        return [(stem + "gate_proj.weight", data[..., ::2].transpose(0, 2, 1)),
                (stem + "up_proj.weight", data[..., 1::2].transpose(0, 2, 1))]
    if name.endswith("experts.gate_up_proj_bias"):
        return [(stem + "gate_proj.bias", data[..., ::2]), (stem + "up_proj.bias", data[..., 1::2])]
    if name.endswith("experts.down_proj"):
        return [(stem + "down_proj.weight", data.transpose(0, 2, 1))]
    if name.endswith("experts.down_proj_bias"):
        return [(stem + "down_proj.bias", data)]
    return None


# --- configs llama.cpp would load but compute differently ----------------------------------------

def _gemma2_refuse(config) -> str | None:
    head_dim = config.head_dim
    if config.query_pre_attn_scalar not in (head_dim, config.hidden_size // config.num_attention_heads):
        return (f"query_pre_attn_scalar {config.query_pre_attn_scalar} is neither head_dim nor hidden/heads, "
                "and llama.cpp's gemma2 scales attention by one of those")
    if _layer_types(config) and not _alternating(config):
        return "llama.cpp's gemma2 takes every other layer as sliding, starting with the first; this model does not"
    return None


def _qwen3_moe_refuse(config) -> str | None:
    if not getattr(config, "norm_topk_prob", True):
        return "norm_topk_prob is off, and llama.cpp's qwen3moe always renormalises the chosen experts' weights"
    if getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1:
        return "some layers are dense (mlp_only_layers / decoder_sparse_step), which llama.cpp's qwen3moe does not read"
    return None


def _gpt_oss_refuse(config) -> str | None:
    if not _alternating(config):
        return "llama.cpp's gpt-oss takes every other layer as sliding, starting with the first; this model does not"
    if float(getattr(config, "swiglu_limit", 7.0)) != 7.0:
        return "swiglu_limit differs from the 7.0 llama.cpp's gpt-oss uses"
    return None


def _smollm3_refuse(config) -> str | None:
    # llama.cpp's smollm3 leaves rope out of every 4th layer, as SmolLM3-3B does.
    expected = [0 if (i + 1) % 4 == 0 else 1 for i in range(config.num_hidden_layers)]
    if list(getattr(config, "no_rope_layers", expected)) != expected:
        return "its no-rope layers are not every 4th layer, the pattern llama.cpp's smollm3 uses"
    return None


def _ministral_refuse(config) -> str | None:
    if "sliding_attention" in _layer_types(config) and (config.sliding_window or 0) < config.max_position_embeddings:
        return ("its layers use a sliding window shorter than its context, and llama.cpp's llama architecture "
                "has no sliding window")
    return None


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", "Llama 2 / 3.x, SmolLM / SmolLM2", rope="norm"),
    "MistralForCausalLM": Family("llama", "Mistral", rope="norm", refuse=_ministral_refuse),
    "MinistralForCausalLM": Family("llama", "Ministral (2410)", rope="norm", refuse=_ministral_refuse),
    "Ministral3ForCausalLM": Family("mistral3", "Ministral 3", rope="norm", hparams=_ministral3_hparams,
                                    ropes=("yarn",)),
    "Qwen2ForCausalLM": Family("qwen2", "Qwen2 / Qwen2.5"),
    "Qwen3ForCausalLM": Family("qwen3", "Qwen3"),
    "Qwen3MoeForCausalLM": Family("qwen3moe", "Qwen3-MoE", hparams=_qwen3_moe_hparams, tensors=_qwen3_moe_tensors,
                                  refuse=_qwen3_moe_refuse),
    "Gemma2ForCausalLM": Family("gemma2", "Gemma 2", norm_offset=1.0, hparams=_gemma2_hparams, refuse=_gemma2_refuse),
    "Gemma3ForCausalLM": Family("gemma3", "Gemma 3 (text)", norm_offset=1.0, hparams=_gemma3_hparams),
    "SmolLM3ForCausalLM": Family("smollm3", "SmolLM3", rope="norm", refuse=_smollm3_refuse),
    "Phi3ForCausalLM": Family("phi3", "Phi-3 / Phi-4-mini", hparams=_phi3_hparams, extra=_phi3_extra,
                              ropes=("default", "longrope", "su")),
    "Olmo2ForCausalLM": Family("olmo2", "OLMo 2"),
    "Olmo3ForCausalLM": Family("olmo2", "OLMo 3", hparams=_olmo3_hparams),
    "GraniteForCausalLM": Family("granite", "Granite 3.x", rope="norm", hparams=_granite_hparams),
    "GptOssForCausalLM": Family("gpt-oss", "gpt-oss", hparams=_gpt_oss_hparams, tensors=_gpt_oss_tensors,
                                refuse=_gpt_oss_refuse, ropes=("yarn",)),
    "Qwen3_5ForCausalLM": Family("qwen35", "Qwen3.5 (hybrid linear attention)", hparams=gguf_hybrid.qwen35_hparams,
                                 tensors=gguf_hybrid.qwen35_tensors, refuse=gguf_hybrid.qwen35_refuse,
                                 ropes=("default",), bare=("ssm_a",), lora=gguf_hybrid.qwen35_lora),
    "Gemma4ForCausalLM": Family("gemma4", "Gemma 4 (text)", hparams=gguf_hybrid.gemma4_hparams,
                                extra=gguf_hybrid.gemma4_extra, refuse=gguf_hybrid.gemma4_refuse,
                                ropes=("default", "proportional"), no_lora=("per_layer_model_projection",)),
}
# model_type -> architecture class, for configs that do not list their architectures
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "ministral": "MinistralForCausalLM",
               "ministral3": "Ministral3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
               "qwen3_moe": "Qwen3MoeForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
               "smollm3": "SmolLM3ForCausalLM", "phi3": "Phi3ForCausalLM", "olmo2": "Olmo2ForCausalLM",
               "olmo3": "Olmo3ForCausalLM", "granite": "GraniteForCausalLM", "gpt_oss": "GptOssForCausalLM",
               "qwen3_5_text": "Qwen3_5ForCausalLM", "gemma4_text": "Gemma4ForCausalLM",
               # composite, but transformers' causal-LM class for it is the language model alone: what is trained
               "qwen3_5": "Qwen3_5ForCausalLM"}
# Composite model types trained whole (transformers' causal-LM class keeps the vision tower), which a GGUF would lose.
MULTIMODAL_TYPES = {"gemma3": "Gemma3ForConditionalGeneration", "gemma4": "Gemma4ForConditionalGeneration"}
# Families llama.cpp loads whose tensors the export does not write yet: said plainly, with what works instead.
NOT_YET: dict[str, str] = {}
