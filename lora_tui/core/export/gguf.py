"""Write a merged (base + adapter) model as one GGUF file for llama.cpp, Ollama and LM Studio.

Built only from the ``gguf`` package's own pieces: ``GGUFWriter`` for the file, the
tensor-name map (``get_tensor_name_map``) for llama.cpp's tensor names, ``gguf.quants.quantize``
for Q8_0 / Q4_0 blocks, ``gguf.vocab`` for the token list and ``SpecialVocab`` for merges, special
token ids and the chat template. K-quants (Q4_K_M, Q5_K_M, Q6_K) take their blocks and per-tensor
types from ``gguf_kquant`` (the optional libgguf quantiser). No llama.cpp build, no download.

The end-of-turn token the adapter learned is written as the file's EOS, so every runtime that
reads the file stops where training taught the model to stop.

Must not: load a model itself (the caller passes the merged model), import torch / gguf at module
top, print, or write anything but the one .gguf file it is given.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_tui.core.export.choices import GGUF_TYPES
# transformers class -> llama.cpp architecture. Mistral is written as "llama", as llama.cpp does.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
SUPPORTED = ("Llama 2 / Llama 3 / SmolLM (LlamaForCausalLM), Mistral (MistralForCausalLM), "
             "Qwen2 / Qwen2.5 (Qwen2ForCausalLM)")


class GGUFExportError(ValueError):
    """The model cannot be written as GGUF; the message says why and what is supported."""


@dataclass
class GGUFInfo:
    path: Path
    architecture: str
    gguf_type: str
    eos_token: str | None
    pre_tokenizer: str
    tensors: int = 0
    notes: list[str] = field(default_factory=list)


def gguf_architecture(config) -> str:
    """llama.cpp's name for this model's architecture, or GGUFExportError naming the supported ones."""
    classes = list(getattr(config, "architectures", None) or [])
    for name in classes:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = getattr(config, "model_type", "")
    if model_type in ("llama", "mistral", "qwen2"):
        return "qwen2" if model_type == "qwen2" else "llama"
    shown = ", ".join(classes) or model_type or "unknown"
    raise GGUFExportError(f"GGUF export does not support {shown} yet. Supported: {SUPPORTED}. "
                          "Fix: export the merged model (safetensors) and convert it with llama.cpp's convert_hf_to_gguf.py.")


def _rope(config) -> tuple[float, dict]:
    """(rope theta, scaling parameters); transformers 5 keeps both in rope_parameters."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    legacy = getattr(config, "rope_scaling", None) or {}
    if isinstance(legacy, dict):
        params = {**legacy, **params}
    theta = params.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    return float(theta), params


def _llama3_rope_factors(params: dict, theta: float, head_dim: int):
    """Per-frequency factors of Llama 3.1+ rope scaling (Meta's published formula), as llama.cpp's rope_freqs."""
    import numpy as np

    factor = params.get("factor", 8.0)
    low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_ctx = params.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's rotary layout for Llama q/k projections (pairs interleaved per head)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _pre_tokenizer(tokenizer_json: dict, model_type: str, vocab: dict) -> str:
    """llama.cpp's name for how text is split before BPE (tokenizer.ggml.pre)."""
    if model_type == "qwen2":
        return "qwen2"
    if "<|begin_of_text|>" in vocab:
        return "llama-bpe"
    text = json.dumps(tokenizer_json.get("pre_tokenizer") or {})
    if '"Digits"' in text and '"individual_digits": true' in text:
        return "smollm"  # SmolLM / SmolLM2: digits split one by one, then GPT-2 byte level
    return "default"


def _vocab(tokenizer_dir: Path, vocab_size: int, special_ids: set[int], user_ids: set[int]):
    """(tokenizer model, tokens, scores, types, pre, tokenizer.json) from the gguf package's vocab readers."""
    import gguf
    from gguf.vocab import BpeVocab, LlamaHfVocab

    data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    exact_scores = True
    if model.get("type") == "BPE" and not model.get("byte_fallback", False):
        vocab, kind = BpeVocab(tokenizer_dir), "gpt2"
    else:
        try:
            from gguf.vocab import SentencePieceVocab

            vocab, kind = SentencePieceVocab(tokenizer_dir), "llama"  # needs tokenizer.model + sentencepiece
        except (FileNotFoundError, ImportError, RuntimeError):  # RuntimeError: sentencepiece not installed
            vocab, kind, exact_scores = LlamaHfVocab(tokenizer_dir), "llama", False
    tokens, scores, types = [], [], []
    for index, (text, score, kind_of) in enumerate(vocab.all_tokens()):
        if not exact_scores and kind_of == gguf.TokenType.NORMAL:
            score = -float(index)  # SentencePiece BPE vocabularies are ordered by merge priority
        tokens.append(text)
        scores.append(score)
        # The HF tokenizer knows which tokens are special (BpeVocab marks only tokens beyond the base vocab).
        if index in special_ids:
            kind_of = gguf.TokenType.CONTROL
        elif index in user_ids and kind_of == gguf.TokenType.NORMAL:
            kind_of = gguf.TokenType.USER_DEFINED
        types.append(kind_of)
    for index in range(len(tokens), vocab_size):  # the embedding matrix may be padded beyond the vocabulary
        tokens.append(f"[PAD{index}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    if len(tokens) > vocab_size:
        raise GGUFExportError(f"the tokenizer has {len(tokens)} tokens but the model's embedding only {vocab_size}.")
    return kind, tokens, scores, types, data, exact_scores


def _tensor_type(gguf_name: str, data, gguf_type: str):
    """The GGML type for one tensor: norms and biases stay F32; blocks need whole rows of 32."""
    import gguf

    q = gguf.GGMLQuantizationType
    if data.ndim < 2 or gguf_name.endswith("rope_freqs.weight"):
        return q.F32
    wanted = {"f16": q.F16, "q8_0": q.Q8_0, "q4_0": q.Q4_0}[gguf_type]
    if wanted == q.Q4_0 and gguf_name.split(".")[0] in ("token_embd", "output"):
        wanted = q.Q8_0  # as llama.cpp's Q4_0 recipe: embeddings and output lose the most at 4 bits
    if wanted in (q.Q8_0, q.Q4_0) and data.shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0]:
        return q.F16
    return wanted


def write_gguf(model, tokenizer, tokenizer_dir: str | Path, out_file: str | Path, *, gguf_type: str = "f16",
               name: str = "model", eos_token_id: int | None = None,
               on_progress: Callable[[str, float], None] | None = None) -> GGUFInfo:
    """Write ``model`` (merged, 16/32-bit) as ``out_file``. ``tokenizer_dir`` holds the saved tokenizer
    (tokenizer.json, tokenizer_config.json, chat template); ``eos_token_id`` is the token that ended
    answers in training."""
    import gguf
    from gguf.quants import quantize

    from lora_tui.core.export.gguf_kquant import KQUANT_TYPES, is_70b, kquant_missing, kquant_type_name, quantize_rows

    report = on_progress or (lambda message, fraction: None)
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, not '{gguf_type}'.")
    kquant = gguf_type in KQUANT_TYPES
    if kquant and kquant_missing():
        raise GGUFExportError(kquant_missing())
    config = model.config
    arch_name = gguf_architecture(config)
    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    tokenizer_dir, out_file = Path(tokenizer_dir), Path(out_file)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise GGUFExportError(f"{tokenizer_dir} has no tokenizer.json (a fast tokenizer is needed for GGUF).")
    n_head, n_layer = config.num_attention_heads, config.num_hidden_layers
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    theta, rope = _rope(config)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear", "llama3"):
        raise GGUFExportError(f"rope scaling '{rope_type}' is not supported by the GGUF export yet "
                              "(supported: none, linear, llama3).")
    vocab_size = model.get_input_embeddings().weight.shape[0]
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special_ids = {i for i, t in decoder.items() if getattr(t, "special", False)}
    user_ids = {i for i, t in decoder.items() if not getattr(t, "special", False)}
    kind, tokens, scores, types, tok_json, exact_scores = _vocab(tokenizer_dir, vocab_size, special_ids, user_ids)
    pre = _pre_tokenizer(tok_json, getattr(config, "model_type", ""), tokenizer.get_vocab()) if kind == "gpt2" else "default"
    info = GGUFInfo(out_file, arch_name, gguf_type, None, pre)
    if not exact_scores:
        info.notes.append("SentencePiece scores derived from token order (pip install sentencepiece, with the base "
                          "model's tokenizer.model present, writes the exact ones)")
    if pre == "default" and kind == "gpt2":
        info.notes.append("pre-tokenizer not recognised: written as 'default' (GPT-2 splitting)")

    writer = gguf.GGUFWriter(str(out_file), arch_name, use_temp_file=True)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(int(getattr(config, "max_position_embeddings", 2048)))
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope.get("factor", 1.0)))
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{gguf_type.upper()}"))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(scores)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    if eos_token_id is not None:
        special.special_token_ids["eos"] = int(eos_token_id)  # the end token training taught
    special.add_to_gguf(writer, quiet=True)
    eos = special.special_token_ids.get("eos")
    info.eos_token = tokenizer.convert_ids_to_tokens(eos) if eos is not None else None
    if special.chat_template is None:
        info.notes.append("no chat template in the tokenizer: none written")

    report(f"Converting tensors to {gguf_type.upper()}", 0.75)
    names = gguf.get_tensor_name_map(arch, n_layer)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    fallbacks: dict[str, int] = {}
    if rope_type == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          _llama3_rope_factors(rope, theta, head_dim))
    for hf_name, tensor in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or "rotary_emb" in hf_name:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFExportError(f"no GGUF name for tensor '{hf_name}' of {arch_name}. Supported: {SUPPORTED}.")
        data = tensor.detach().float().cpu().numpy()
        if arch_name == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif arch_name == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        if kquant and data.ndim >= 2 and not gguf_name.endswith("rope_freqs.weight"):
            name_of_type = kquant_type_name(gguf_name, data.shape[-1], gguf_type, n_layer, tied=tied,
                                            big_model=is_70b(arch_name, n_layer, n_head, n_kv))
            qtype = gguf.GGMLQuantizationType[name_of_type]
            if data.shape[-1] % 256:
                fallbacks[name_of_type] = fallbacks.get(name_of_type, 0) + 1
            if qtype != gguf.GGMLQuantizationType.F16:
                writer.add_tensor(gguf_name, quantize_rows(data, name_of_type), raw_dtype=qtype)
                info.tensors += 1
                continue
        else:
            qtype = _tensor_type(gguf_name, data, gguf_type)
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(gguf_name, quantize(data, qtype))
        else:
            writer.add_tensor(gguf_name, quantize(data, qtype), raw_dtype=qtype)
        info.tensors += 1

    if fallbacks:
        info.notes.append("rows not a whole number of 256-value K blocks, stored as llama.cpp's quantiser does: "
                          + ", ".join(f"{n} tensors {t}" for t, n in sorted(fallbacks.items())))
    report(f"Writing {out_file.name}", 0.9)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def read_gguf_facts(path: str | Path) -> dict:
    """What a GGUF file says about itself: architecture, file type, EOS / EOT ids and chat template."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def value(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {"architecture": value("general.architecture"), "file_type": value("general.file_type"),
            "eos_token_id": value("tokenizer.ggml.eos_token_id"), "eot_token_id": value("tokenizer.ggml.eot_token_id"),
            "chat_template": value("tokenizer.chat_template"), "tokens": len(tokens.data) if tokens else 0,
            "types": sorted({t.tensor_type.name for t in reader.tensors})}
