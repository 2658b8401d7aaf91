"""Exact parameter counts of a decoder from its config.json, per family, and the parts the estimate needs.

``layout(cfg)`` reads a transformers config dictionary (text part) and returns a ``Layout``: every
parameter counted the way transformers 5.25 builds the model (checked to the parameter against tiny
random models of each family in tests/test_families.py), split into the parts whose memory behaves
differently: the input embeddings, the output head, the per-layer embedding table (Gemma 3n / 4), the
MoE experts (3-D parameters: resident in full, k of them active per token, never quantized by
bitsandbytes), the linear layers LoRA and bitsandbytes see, and the rest (norms, biases, sinks, the
linear-attention state parameters).

Pure arithmetic on a dict: no torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

_QK_NORM_HEAD = {"qwen3", "qwen3_moe", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next",
                 "gemma3", "gemma3_text", "gemma4", "gemma4_text"}  # q_norm / k_norm over one head
_QK_NORM_FULL = {"olmo2", "olmo3"}  # q_norm over all query heads, k_norm over all key heads
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text", "gemma4", "gemma4_text"}
_GATED_QUERY = {"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next"}  # q_proj also emits a gate
_QKV_BIAS_ONLY = {"qwen2", "qwen2_moe"}  # q, k, v biases; o without
_LINEAR_ATTENTION = {"linear_attention"}


@dataclass(frozen=True)
class Layout:
    total: int
    embedding: int  # input token embeddings
    head: int  # untied output projection (0 when tied)
    per_layer_embedding: int  # Gemma 3n / 4: the per-layer embedding table
    experts: int  # MoE expert tensors (all experts)
    active_experts: int  # the experts' parameters one token runs through (k of them)
    linear: int  # nn.Linear weights of the decoder layers (what LoRA wraps and bitsandbytes quantizes)
    linear_attention_layers: int = 0
    attention_layers: int = 0
    # Distinct (module, in, out) of the linear layers a Llama-like layer's shapes leave out: the attention
    # projections of layers with their own head size (per_layer_config: Gemma 4's full-attention layers) and the
    # per-layer-input projections (Gemma 3n / 4). CPU bf16 compiles a oneDNN kernel per distinct matmul shape.
    other_linear: tuple[tuple[str, int, int], ...] = ()
    head_dims: tuple[int, ...] = ()  # distinct head sizes of the softmax-attention layers

    @property
    def rest(self) -> int:
        """Norms, biases, sinks, routers' own parameters and state parameters: kept unquantized."""
        return self.total - self.embedding - self.head - self.per_layer_embedding - self.experts - self.linear


def _get(cfg: dict, *keys, default=None):
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _layer_types(cfg: dict, layers: int) -> list[str]:
    types = cfg.get("layer_types")
    return list(types) if types and len(types) == layers else ["full_attention"] * layers


def _override(cfg: dict, t: str, layer: int) -> dict:
    """A layer's own attention settings: transformers' per_layer_config (Gemma 4's full-attention layers). A Gemma 4
    config.json without one (as published) says global_head_dim / num_global_key_value_heads, which
    Gemma4TextConfig turns into it the same way."""
    if "per_layer_config" not in cfg and cfg["model_type"] in ("gemma4", "gemma4_text"):
        if t != "full_attention":
            return {}
        own = {"head_dim": cfg.get("global_head_dim", 512)}
        if cfg.get("attention_k_eq_v") and cfg.get("num_global_key_value_heads") is not None:
            own["num_key_value_heads"] = cfg["num_global_key_value_heads"]
        return own
    per_layer = cfg.get("per_layer_config") or {}
    return per_layer.get(str(layer)) or per_layer.get(layer) or {}


def _attention(cfg: dict, t: str, h: int, heads: int, kv: int, hd: int) -> tuple[dict[str, tuple[int, int]], int]:
    """(in, out) of each linear projection of one softmax-attention layer with these head settings, and its
    other parameters."""
    mt = cfg["model_type"]
    q, k = heads * hd, kv * hd
    shapes = {"q_proj": (h, q * (2 if mt in _GATED_QUERY else 1)), "k_proj": (h, k)}
    v = 0 if (cfg.get("attention_k_eq_v") and t == "full_attention") else k
    if v:
        shapes["v_proj"] = (h, v)
    shapes["o_proj"] = (q, h)
    other = 0
    if mt in _QKV_BIAS_ONLY:
        other += q + k + v
    elif cfg.get("attention_bias"):
        other += q + k + v + h
    if mt in _QK_NORM_HEAD:
        other += 2 * hd
    elif mt in _QK_NORM_FULL:
        other += q + k
    if mt == "gpt_oss":
        other += heads  # attention sinks
    return shapes, other


def _linear_attention(cfg: dict, h: int) -> tuple[int, int]:
    """(linear weights, other parameters) of one Gated DeltaNet layer (Qwen3.5 / Qwen3-Next)."""
    nk, nv = int(cfg["linear_num_key_heads"]), int(cfg["linear_num_value_heads"])
    dk, dv = int(cfg["linear_key_head_dim"]), int(cfg["linear_value_head_dim"])
    conv = 2 * nk * dk + nv * dv
    linear = h * conv + h * nv * dv + 2 * h * nv + nv * dv * h  # in_proj_qkv, in_proj_z, in_proj_b / _a, out_proj
    other = conv * int(cfg.get("linear_conv_kernel_dim", 4)) + 2 * nv + dv  # conv1d, dt_bias and A_log, norm
    return linear, other


def _mlp(cfg: dict, layer: int, h: int, i: int) -> tuple[int, int, int, int]:
    """(dense linear weights, expert parameters, active expert parameters, other) of one layer's MLP."""
    mt = cfg["model_type"]
    experts = int(_get(cfg, "num_local_experts", "num_experts", default=0) or 0)
    dense_here = layer in (cfg.get("mlp_only_layers") or []) or experts <= 1 or \
        (mt == "qwen3_moe" and (layer + 1) % int(cfg.get("decoder_sparse_step", 1) or 1))
    if dense_here:
        return 3 * h * i, 0, 0, 0
    k = int(_get(cfg, "num_experts_per_tok", "top_k_experts", default=1))
    width = int(_get(cfg, "moe_intermediate_size", default=i)) if mt != "gpt_oss" else i
    per_expert = 3 * h * width + (2 * width + h if mt == "gpt_oss" else 0)  # gpt-oss: gate_up and down biases
    router = h * experts + (experts if mt == "gpt_oss" else 0)
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    dense = 3 * h * shared + (h if shared else 0)  # Qwen2-MoE style shared expert and its gate
    return dense, experts * per_expert, k * per_expert, router


def layout(cfg: dict) -> Layout:
    """The parameter layout of a decoder config (a text config; a multimodal one's ``text_config`` is read)."""
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type", ""))}
    mt = str(cfg.get("model_type", ""))
    cfg = {**cfg, "model_type": mt}
    h, layers = int(_get(cfg, "hidden_size")), int(_get(cfg, "num_hidden_layers"))
    heads = int(_get(cfg, "num_attention_heads"))
    kv = int(_get(cfg, "num_key_value_heads", default=heads))
    hd = int(_get(cfg, "head_dim", default=h // heads))
    i, vocab = int(_get(cfg, "intermediate_size", default=4 * h)), int(cfg["vocab_size"])
    tied = bool(cfg.get("tie_word_embeddings", mt in _FOUR_NORMS))
    norms = 4 if mt in _FOUR_NORMS else 2
    linear = experts = active = other = 0
    n_linear_attention = 0
    shapes: dict[tuple[str, int, int], None] = {}  # other_linear, in first-seen order
    head_dims: set[int] = set()
    for layer, t in enumerate(_layer_types(cfg, layers)):
        if t in _LINEAR_ATTENTION:
            n_linear_attention += 1
            lin, oth = _linear_attention(cfg, h)
        else:
            override = _override(cfg, t, layer)
            own_hd = int(override.get("head_dim", hd))
            own, oth = _attention(cfg, t, h, heads, int(override.get("num_key_value_heads", kv)), own_hd)
            lin = sum(a * b for a, b in own.values())
            head_dims.add(own_hd)
            usual = _attention(cfg, t, h, heads, kv, hd)[0]  # the shapes without this layer's own head settings
            shapes.update({(n, a, b): None for n, (a, b) in own.items() if usual.get(n) != (a, b)})
        dense, ex, act, router = _mlp(cfg, layer, h, i)
        linear += lin + dense
        experts, active = experts + ex, active + act
        other += oth + router + norms * h
    ple = 0
    ple_dim = int(cfg.get("hidden_size_per_layer_input") or 0) if mt in ("gemma4", "gemma4_text", "gemma3n_text") else 0
    if ple_dim:
        ple = int(cfg.get("vocab_size_per_layer_input") or vocab) * layers * ple_dim
        linear += layers * 2 * h * ple_dim + h * layers * ple_dim  # per-layer gate and projection; model projection
        other += layers * h + ple_dim  # post_per_layer_input_norm; per_layer_projection_norm
        shapes.update({("per_layer_input_gate", h, ple_dim): None, ("per_layer_projection", ple_dim, h): None,
                       ("per_layer_model_projection", h, layers * ple_dim): None})
    embedding, head = vocab * h, 0 if tied else vocab * h
    total = embedding + head + ple + experts + linear + other + h  # + the final norm
    return Layout(total=total, embedding=embedding, head=head, per_layer_embedding=ple, experts=experts,
                  active_experts=active, linear=linear, linear_attention_layers=n_linear_attention,
                  attention_layers=layers - n_linear_attention, other_linear=tuple(shapes),
                  head_dims=tuple(sorted(head_dims)))
