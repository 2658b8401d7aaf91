"""The model families lora_tui knows, and what each needs from the rest of the product.

One row per family people fine-tune (``FAMILIES``): the transformers ``model_type`` values that belong to
it, the attention implementations transformers refuses for it (Gemma 2's logit soft-capping and gpt-oss's
attention sinks have no SDPA path), whether rows may share a packed micro-batch (a hybrid model's
linear-attention layers carry their state across row boundaries on the torch path), whether it is a
mixture of experts, and the end-of-turn marker of its chat template.

``family_of(model_type)`` finds the row for a config; the run plan, the memory estimate, the catalogue
and the Model screen read these facts, so each is written once. A family is listed as supported only
where ``benchmarks/family_matrix.py`` and tests/test_families.py take a tiny model of it through the whole
flow (train, QLoRA, kill -9 + resume, chat, adapters, merge and its round trip, GGUF, Modelfile).

Must not import torch or transformers (the wizard and the run plan import it at start-up); a test
checks the attention facts against each model class's own ``_supports_sdpa`` / ``_supports_flex_attn``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """What lora_tui must know about one family of causal language models."""

    key: str
    label: str
    model_types: tuple[str, ...]  # config.json model_type values (text and multimodal wrappers)
    end_of_turn: str  # the marker its chat template closes an answer with
    needs: str = ""  # what SDPA lacks for it, so transformers refuses SDPA ("" = SDPA works)
    cuda_attention: tuple[str, ...] = ()  # what computes it exactly on a GPU instead, in order of preference
    linear_attention: bool = False  # hybrid: some layers are recurrent (state across positions)
    no_packing: str = ""  # why rows packed into one micro-batch would see each other ("" = they do not)
    moe: bool = False
    per_layer_embeddings: bool = False  # Gemma 3n / 4: a second embedding table feeding every layer

    @property
    def packs_rows(self) -> bool:
        """Rows may share one packed / padding-free micro-batch without seeing each other (tests/test_family_plan.py
        packs two rows and compares each family's logits with the row alone)."""
        return not self.no_packing

    def attention(self, device: str, flash: str | None) -> tuple[str, str] | None:
        """(implementation, why) where this family cannot take the device's usual SDPA / FlashAttention; None
        where it can. ``flash``: the FlashAttention package installed ("flash_attention_2" / "_3" / None)."""
        if not self.needs:
            return None
        if device == "cuda":
            for choice in self.cuda_attention:
                if choice == "flash_attention_2" and flash is None:
                    continue
                return choice, f"{self.label}: SDPA has no {self.needs}; {choice} computes it exactly"
        return "eager", f"{self.label}: SDPA has no {self.needs}; eager attention (transformers' reference path) computes it exactly"


FAMILIES: tuple[Family, ...] = (
    Family("llama", "Llama 3.x", ("llama",), "<|eot_id|>"),
    Family("mistral", "Mistral", ("mistral",), "</s>"),
    Family("ministral", "Ministral", ("ministral", "ministral3", "mistral3"), "</s>"),
    Family("qwen2", "Qwen2.5", ("qwen2",), "<|im_end|>"),
    Family("qwen3", "Qwen3", ("qwen3",), "<|im_end|>"),
    Family("qwen3_5", "Qwen3.5", ("qwen3_5", "qwen3_5_text"), "<|im_end|>", linear_attention=True,
           no_packing="its linear-attention layers carry their state from one packed row into the next "
                      "(transformers' torch path ignores row boundaries)"),
    Family("qwen3_moe", "Qwen3-MoE", ("qwen3_moe",), "<|im_end|>", moe=True),
    Family("gemma2", "Gemma 2", ("gemma2",), "<end_of_turn>",
           needs="attention logit soft-capping", cuda_attention=("flash_attention_2", "flex_attention")),
    Family("gemma3", "Gemma 3", ("gemma3", "gemma3_text"), "<end_of_turn>"),
    Family("gemma4", "Gemma 4", ("gemma4", "gemma4_text"), "<end_of_turn>", per_layer_embeddings=True),
    Family("smollm3", "SmolLM3", ("smollm3",), "<|im_end|>"),
    Family("phi3", "Phi-3 / Phi-4", ("phi3",), "<|end|>"),
    Family("olmo2", "OLMo 2", ("olmo2",), "<|endoftext|>"),
    Family("olmo3", "OLMo 3", ("olmo3",), "<|im_end|>"),
    Family("granite", "Granite", ("granite",), "<|end_of_text|>"),
    # The FlashAttention 2 package has no attention sinks (transformers would drop them without a word); flex
    # attention renormalises by them on CUDA (transformers' integrations/flex_attention.py).
    Family("gpt_oss", "gpt-oss", ("gpt_oss",), "<|return|>", needs="attention sinks",
           cuda_attention=("flex_attention",), moe=True,
           no_packing="transformers 5.25 builds its attention mask without the position ids, so packed rows would "
                      "attend to each other"),
)
_BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}
_BY_KEY = {f.key: f for f in FAMILIES}


def family_of(model_type: str | None) -> Family | None:
    """The family of a config's ``model_type`` (None: a type outside the matrix)."""
    return _BY_TYPE.get(str(model_type or ""))


def family(key: str) -> Family:
    """A family by its key ("qwen3_5"); KeyError names the keys there are."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no family '{key}': one of {', '.join(_BY_KEY)}") from None


_RECURRENT_LAYERS = {"linear_attention", "mamba", "conv", "moe", "sparse", "dense"}  # layer types with no KV cache


def without_cache(config) -> bool:
    """True for a model whose layers are all linear attention (a 2-layer Qwen3.5 takes that layout by default):
    transformers' cache then holds no attention layer and cannot size a mask (``get_mask_sizes can only be called
    on Attention layers``), so such a model runs without the cache (each token recomputes the prefix: exact).
    ``config``: its transformers config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None) or []
    return bool(types) and all(t in _RECURRENT_LAYERS for t in types)
