"""K-quant GGUF types (Q4_K_M, Q5_K_M, Q6_K): which GGML type each tensor gets, and its blocks.

The blocks come from ``libgguf`` (the optional ``gguf-kquant`` extra), whose row quantiser writes
the same bytes as llama.cpp's ``ggml_quantize_chunk`` without an importance matrix (a test compares
them byte for byte when llama.cpp is installed). The installed ``gguf`` package can read K-quants
but has no quantiser for them.

Which tensor gets which type follows llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp)
for the architectures the export supports: the output matrix (or tied embeddings) at Q6_K,
``attn_v`` and ``ffn_down`` of the first and last eighth of the layers and every third one between
at Q6_K in the _M mixes, and llama.cpp's fallbacks where a row is not a whole number of 256-value
blocks (Q4_K -> Q5_0, Q6_K -> Q8_0, then F16), with one deliberate difference: Q5_K falls back to Q5_0, not
llama.cpp's Q5_1. Measured on the embedded SmolLM2-135M after a 24-step run (its 576-wide attention and gate/up
rows all fall back), in llama.cpp on held-out answers: llama.cpp's Q5_K_M mix moved the log-probability of each
token by 0.144 nats on average, 2.6x its Q4_K_M (0.056), and the same mix with Q5_0 rows by 0.055, in a smaller
file (102.3 against 106.9 MiB); through transformers' loader 0.150 / 0.045 / 0.046. llama.cpp's own quantiser
notes that Q4_1 / Q5_1 "go crazy" without an importance matrix, which this export does not use.

Must not: import libgguf, gguf or numpy at module top, print, or write files.
"""

from __future__ import annotations

KQUANT_TYPES = ("q4_k_m", "q5_k_m", "q6_k")
EXTRA = 'pip install "lora-tui[gguf-kquant]"'
_BASE = {"q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_0", "Q6_K": "Q8_0"}  # llama.cpp: Q5_K -> Q5_1 (see above)
_BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "Q5_0": 32, "Q8_0": 32, "F16": 1}


def kquant_missing() -> str | None:
    """None when K-quants can be written; otherwise the one line that says how to get them."""
    try:
        import libgguf  # noqa: F401
    except ImportError:
        return f"K-quant GGUF types ({', '.join(KQUANT_TYPES)}) need the libgguf quantiser. Fix: {EXTRA}"
    return None


def _use_more_bits(i_layer: int, n_layer: int) -> bool:
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def is_70b(arch: str, n_layer: int, n_head: int, n_kv: int) -> bool:
    """llama.cpp's LLM_TYPE_70B for these architectures (Llama 80 layers with GQA, Qwen2 80 layers)."""
    return n_layer == 80 and (arch == "qwen2" or n_head != n_kv)


def kquant_type_name(gguf_name: str, n_cols: int, gguf_type: str, n_layer: int, *, tied: bool,
                     big_model: bool = False, n_expert: int = 0) -> str:
    """The GGML type name for one 2-D (or stacked 3-D expert) weight of a K-quant file, as llama.cpp's
    quantiser picks it (``llama_tensor_get_type_impl``: attn_v, and the fused attn_qkv that shares its rule;
    ffn_down, experts included; the output matrix; 8-expert models)."""
    new = _BASE[gguf_type]
    parts = gguf_name.split(".")
    layer = int(parts[1]) if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit() else None
    if gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight"):
        new = "Q8_0" if n_cols % _BLOCK[new] else "Q6_K"
    elif ("attn_v.weight" in gguf_name or "attn_qkv.weight" in gguf_name) and layer is not None:
        if gguf_type in ("q4_k_m", "q5_k_m") and _use_more_bits(layer, n_layer):
            new = "Q6_K"
        if big_model and new == "Q4_K":
            new = "Q5_K"  # 70B: attn_v is 8x smaller than attn_q, more bits are nearly free
        if n_expert == 8:
            new = "Q8_0"  # llama.cpp: for 8-expert models this costs little
    elif "attn_k.weight" in gguf_name and n_expert == 8:
        new = "Q8_0"
    elif "ffn_down" in gguf_name and layer is not None:
        if gguf_type in ("q4_k_m", "q5_k_m") and _use_more_bits(layer, n_layer):
            new = "Q6_K"
    elif "attn_output.weight" in gguf_name and n_expert == 8 and gguf_type == "q4_k_m":
        new = "Q5_K"
    if n_cols % _BLOCK[new]:
        new = _FALLBACK.get(new, new)
        if n_cols % _BLOCK[new]:
            new = "F16"
    return new


def quantize_rows(data, type_name: str):
    """``data`` (float32, rows of n_cols) as GGML blocks: uint8 array (rows, bytes per row)."""
    import libgguf
    import numpy as np

    rows = np.ascontiguousarray(data.reshape(-1, data.shape[-1]), dtype=np.float32)
    blocks = np.asarray(libgguf.quantize_rows(rows, libgguf.GGMLQuantizationType[type_name]), dtype=np.uint8)
    return blocks.reshape(*data.shape[:-1], blocks.shape[-1])
