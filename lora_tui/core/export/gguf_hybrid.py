"""Qwen3.5 and Gemma 4 for the GGUF export: what llama.cpp's ``qwen35`` and ``gemma4`` architectures read beyond
the common Llama-like layout (the table itself is ``gguf_families.FAMILIES``).

Each item is a fact of llama.cpp's loader and graph (src/models/qwen35.cpp, gemma4.cpp) or of its converter
(convert_hf_to_gguf's Qwen3_5TextModel / Gemma4Model), checked by loading the written file in llama.cpp against
the merged model (tests/test_export_gguf_families.py):

Qwen3.5 (Gated DeltaNet linear-attention layers, a full-attention layer every ``full_attention_interval``):
- the norms are zero-centred (``1 + w``) except the gated norm inside the linear attention: ``w + 1`` is written;
- ``A_log`` becomes ``ssm_a = -exp(A_log)`` (llama.cpp multiplies softplus(a + dt_bias) by it), ``dt_bias`` is
  ``ssm_dt.bias``, the depthwise ``conv1d`` kernel (channels, 1, k) is written (channels, k) and kept F32;
- the value heads are regrouped: transformers stores them grouped by key head (k0v0 k0v1 k1v0 k1v1), llama.cpp
  repeats the key heads tiled (k0 k1 k0 k1), so every tensor indexed by value head (the V rows of ``in_proj_qkv``
  and of the conv kernel, ``in_proj_z``, ``in_proj_a`` / ``_b``, ``A_log``, ``dt_bias``, ``out_proj``'s columns)
  is reordered to v0-of-each-key-head first;
- the gated full attention's ``q_proj`` (query and gate interleaved per head) is written as it is;
- metadata: the ssm sizes, the full-attention interval, MRoPE sections (text-only positions make them the same
  rotation as plain rope).

Gemma 4 (text): norms multiply by ``w`` (no offset); full-attention layers have their own head size, KV head count
and "proportional" rope (a quarter of the dimensions rotated at frequencies of the whole head), which llama.cpp
takes as ``rope_freqs`` factors of 1 for the rotated pairs and 1e30 (no rotation) for the rest; per-layer
embeddings, KV layers shared from the end, double-wide MLPs in those, sliding windows per layer, final soft-cap.

Must not: import torch, gguf or numpy at module top, print, or write files.
"""

from __future__ import annotations


# --- Qwen3.5 ---------------------------------------------------------------------------------------

def _interval(config) -> int | None:
    """The full-attention interval llama.cpp's qwen35 derives every layer's kind from (None: no such interval)."""
    types = list(getattr(config, "layer_types", None) or [])
    if "full_attention" not in types:
        return None
    every = types.index("full_attention") + 1
    expected = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(len(types))]
    return every if types == expected else None


def qwen35_refuse(config) -> str | None:
    if _interval(config) is None:
        return ("its layers are not linear attention with a full-attention layer every n-th layer, the only layout "
                "llama.cpp's qwen35 reads")
    if config.linear_key_head_dim != config.linear_value_head_dim:
        return "its linear-attention key and value heads differ in size, and llama.cpp's qwen35 takes them equal"
    if config.linear_num_value_heads % config.linear_num_key_heads:
        return "its linear-attention value heads are not a multiple of its key heads"
    return None


def qwen35_hparams(writer, config) -> None:
    writer.add_ssm_conv_kernel(int(config.linear_conv_kernel_dim))
    writer.add_ssm_state_size(int(config.linear_key_head_dim))
    writer.add_ssm_group_count(int(config.linear_num_key_heads))
    writer.add_ssm_time_step_rank(int(config.linear_num_value_heads))
    writer.add_ssm_inner_size(int(config.linear_value_head_dim * config.linear_num_value_heads))
    writer.add_full_attention_interval(int(_interval(config)))
    writer.add_rope_dimension_sections(_mrope_sections(config))


def _mrope_sections(config) -> list[int]:
    """MRoPE sections (rotated pairs read from the time / height / width positions), required by llama.cpp's
    qwen35. For text all three positions are the token's position, so any split that gives every rotated pair one
    of them rotates as transformers does: the config's when it covers the rotated pairs (Qwen3.5: [11, 11, 10] of
    32), else pair i from position i % 3 (llama.cpp asserts the sections fit in the head)."""
    rope = getattr(config, "rope_parameters", None) or {}
    pairs = int(config.head_dim * rope.get("partial_rotary_factor", 1.0)) // 2
    sections = list(rope.get("mrope_section") or [11, 11, 10])[:3]
    if sum(sections) != pairs:
        sections = [(pairs - r + 2) // 3 for r in range(3)]  # pairs r, r+3, ... in section r
    return sections + [0]


def _tile_heads(data, axis: int, groups: int, per_group: int, head: int):
    """Heads along ``axis`` from grouped order (g0h0 g0h1 g1h0 g1h1) to tiled order (g0h0 g1h0 g0h1 g1h1)."""
    import numpy as np

    moved = np.moveaxis(data, axis, 0)
    rest = moved.shape[1:]
    moved = moved.reshape(groups, per_group, head, *rest).swapaxes(0, 1).reshape(-1, *rest)
    return np.ascontiguousarray(np.moveaxis(moved, 0, axis))


def qwen35_tensors(name: str, data, config):
    """(transformers-spelt or llama.cpp name, array) for the tensors Qwen3.5 writes differently; None: as it is."""
    import numpy as np

    if name.endswith("norm.weight") and ".linear_attn.norm." not in name:
        return [(name, data + 1.0)]  # Qwen3_5RMSNorm: x * (1 + w); the gated norm multiplies by w
    if ".linear_attn." not in name:
        return None
    n_k, n_v = config.linear_num_key_heads, config.linear_num_value_heads
    head_v, key_dim = config.linear_value_head_dim, config.linear_key_head_dim * n_k

    def tiled(array, axis=0, head=head_v):
        return _tile_heads(array, axis, n_k, n_v // n_k, head)

    stem = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
    if name.endswith(".A_log"):
        return [(name, -np.exp(tiled(data, head=1)))]
    if name.endswith(".dt_bias"):
        return [(name[: -len("dt_bias")] + "dt_proj.bias", tiled(data, head=1))]
    if stem.endswith(".conv1d"):
        kernel = data.reshape(data.shape[0], data.shape[-1])  # (channels, 1, k) -> (channels, k)
        return [(name, np.concatenate([kernel[: 2 * key_dim], tiled(kernel[2 * key_dim:])]))]
    if stem.endswith(".in_proj_qkv"):
        return [(name, np.concatenate([data[: 2 * key_dim], tiled(data[2 * key_dim:])]))]
    if stem.endswith(".in_proj_z"):
        return [(name, tiled(data))]
    if stem.endswith((".in_proj_a", ".in_proj_b")):
        return [(name, tiled(data, head=1))]
    if stem.endswith(".out_proj"):
        return [(name, tiled(data, axis=1))]
    return None


def qwen35_lora(module: str, a, b, config):
    """A LoRA pair (A: rank x in, B: out x rank) of a Qwen3.5 module in the order the base file's weight has: B's
    rows take the weight's value-head regrouping, A's columns for ``out_proj`` (its value heads are its inputs)."""
    name = module + ".weight"
    if module.endswith(".linear_attn.out_proj"):
        return qwen35_tensors(name, a, config)[0][1], b
    pieces = qwen35_tensors(name, b, config)
    return a, (pieces[0][1] if pieces else b)


# --- Gemma 4 ---------------------------------------------------------------------------------------

def _per_layer(config, index: int, attr: str):
    """A per-layer value (transformers 5 keeps full-attention layers' head size / KV heads in per_layer_config)."""
    per_layer = getattr(config, "per_layer_config", None)
    if per_layer is not None:
        try:
            return getattr(per_layer[index], attr)
        except (KeyError, IndexError, TypeError, ValueError):
            pass
    full = config.layer_types[index] == "full_attention"
    if full and attr == "head_dim" and getattr(config, "global_head_dim", None):
        return config.global_head_dim
    if full and attr == "num_key_value_heads" and getattr(config, "num_global_key_value_heads", None):
        return config.num_global_key_value_heads
    return getattr(config, attr)


def _gemma4_rope(config, kind: str) -> dict:
    return dict((getattr(config, "rope_parameters", None) or {}).get(kind) or {})


def gemma4_refuse(config) -> str | None:
    types = list(config.layer_types)
    if getattr(config, "enable_moe_block", False):
        return "its mixture-of-experts blocks (Gemma 4 26B-A4B) are not written by the GGUF export yet"
    if getattr(config, "attention_bias", False):
        return "its attention has biases, which llama.cpp's gemma4 does not read"
    if getattr(config, "use_bidirectional_attention", None) == "all":
        return "its attention is bidirectional, and llama.cpp's gemma4 is causal"
    if getattr(config, "hidden_size_per_layer_input", 0) and config.vocab_size_per_layer_input != config.vocab_size:
        return "its per-layer embedding table is not one row per token, as llama.cpp's gemma4 reads it"
    full, sliding = _gemma4_rope(config, "full_attention"), _gemma4_rope(config, "sliding_attention")
    if full.get("rope_type", "default") not in ("default", "proportional") or float(full.get("factor", 1.0)) != 1.0:
        return f"its full-attention rope '{full.get('rope_type')}' (factor {full.get('factor', 1.0)}) is not written"
    if sliding.get("rope_type", "default") != "default":
        return f"its sliding-window rope '{sliding.get('rope_type')}' is not written"
    shared = int(getattr(config, "num_kv_shared_layers", 0) or 0)
    first = len(types) - shared
    # llama.cpp's gemma4 takes a shared layer's KV from the layer before the first shared one (full attention) or
    # the one before that (sliding); transformers from the last earlier layer of the same kind
    if shared and (first < 2 or types[first - 1] != "full_attention" or types[first - 2] != "sliding_attention"):
        return ("its shared-KV layers do not follow a sliding then a full-attention layer, the layers llama.cpp's "
                "gemma4 shares them from")
    return None


def gemma4_hparams(writer, config) -> None:
    types = list(config.layer_types)
    n_layer = len(types)
    full_at, swa_at = types.index("full_attention"), types.index("sliding_attention")
    head_full, head_swa = int(_per_layer(config, full_at, "head_dim")), int(_per_layer(config, swa_at, "head_dim"))
    kv_heads = [int(_per_layer(config, i, "num_key_value_heads")) for i in range(n_layer)]
    writer.add_head_count_kv(kv_heads if len(set(kv_heads)) > 1 else kv_heads[0])
    writer.add_key_length(head_full)
    writer.add_value_length(head_full)
    writer.add_key_length_swa(head_swa)
    writer.add_value_length_swa(head_swa)
    writer.add_rope_dimension_count(head_full)  # the unrotated part is in rope_freqs (gemma4_extra)
    writer.add_rope_dimension_count_swa(head_swa)  # transformers' default rope turns the whole head
    if "rope_theta" in _gemma4_rope(config, "sliding_attention"):
        writer.add_rope_freq_base_swa(float(_gemma4_rope(config, "sliding_attention")["rope_theta"]))
    writer.add_sliding_window(int(config.sliding_window))
    writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    shared = int(getattr(config, "num_kv_shared_layers", 0) or 0)
    writer.add_shared_kv_layers(shared)
    writer.add_embedding_length_per_layer_input(int(getattr(config, "hidden_size_per_layer_input", 0) or 0))
    if getattr(config, "use_double_wide_mlp", False) and shared:
        n_ff = int(config.intermediate_size)
        writer.add_feed_forward_length([n_ff if i < n_layer - shared else 2 * n_ff for i in range(n_layer)])
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def gemma4_extra(config):
    """rope_freqs for the full-attention layers: proportional rope turns the first pairs of the head at the whole
    head's frequencies and leaves the rest; llama.cpp divides each pair's frequency by its factor (1e30: none)."""
    import numpy as np

    full_at = list(config.layer_types).index("full_attention")
    head_full = int(_per_layer(config, full_at, "head_dim"))
    rope = _gemma4_rope(config, "full_attention")
    share = float(rope.get("partial_rotary_factor", 1.0)) if rope.get("rope_type") == "proportional" else 1.0
    turned = int(share * head_full // 2)
    return [("rope_freqs.weight", np.array([1.0] * turned + [1e30] * (head_full // 2 - turned), dtype=np.float32))]
