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
from types import SimpleNamespace
from typing import Callable

from lora_tui.core.export.choices import GGUF_TYPES

INSTEAD = ("Fix: export the merged model (lora-tui merge RUN OUT, safetensors; it runs in transformers, vLLM and "
           "Ollama) and convert it with llama.cpp's convert_hf_to_gguf.py when a build that knows it is at hand.")


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


def supported_families() -> str:
    """The families the GGUF export writes, as a user reads them."""
    from lora_tui.core.export.gguf_families import FAMILIES

    return ", ".join(dict.fromkeys(f.label for f in FAMILIES.values()))


def gguf_config(config):
    """The config a GGUF is written from: a transformers config (a composite's language model), or a model_type /
    architecture name given alone."""
    if isinstance(config, str):
        named_class = config[:1].isupper()  # "Qwen3ForCausalLM" is a class, "qwen3" a model_type
        return SimpleNamespace(architectures=[config] if named_class else [], model_type="" if named_class else config)
    return getattr(config, "text_config", None) if _composite(config) else config


def _composite(config) -> bool:
    classes = " ".join(getattr(config, "architectures", None) or [])
    return "ForConditionalGeneration" in classes and getattr(config, "text_config", None) is not None


def _multimodal(config) -> bool:
    """A composite model trained whole, whose vision part a GGUF would lose; not one whose causal-LM class in
    transformers is its language model alone (Qwen3.5: that is what the product trains, merges and writes)."""
    from lora_tui.core.export.gguf_families import MODEL_TYPES

    return _composite(config) and getattr(config, "model_type", "") not in MODEL_TYPES


def gguf_family(config):
    """The ``Family`` the export writes this config as, or GGUFExportError with one line saying why not."""
    from lora_tui.core.export.gguf_families import FAMILIES, MODEL_TYPES, MULTIMODAL_TYPES, NOT_YET

    if isinstance(config, str) and config in MULTIMODAL_TYPES:  # a model type alone (the Model screen's Steps)
        config = SimpleNamespace(architectures=[MULTIMODAL_TYPES[config]], text_config=True, model_type=config)
    if not isinstance(config, str) and _multimodal(config):
        shown = ", ".join(config.architectures)
        raise GGUFExportError(f"GGUF export writes text models; {shown} is multimodal (its vision tower would be "
                              f"lost). {INSTEAD}")
    config = gguf_config(config)
    classes = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "") or ""
    for name in classes + [MODEL_TYPES.get(model_type, "")]:
        if name in FAMILIES:
            family = FAMILIES[name]
            reason = family.reason(config) if hasattr(config, "num_hidden_layers") else None
            if reason:
                raise GGUFExportError(f"GGUF export cannot write this {family.label} model: {reason}. {INSTEAD}")
            return family
    shown = ", ".join(classes) or model_type or "unknown"
    for name in classes + [model_type]:
        if name in NOT_YET:
            raise GGUFExportError(f"GGUF export does not write {NOT_YET[name]} ({shown}) yet, though llama.cpp loads "
                                  f"it. {INSTEAD}")
    raise GGUFExportError(f"GGUF export does not support {shown} yet. Supported: {supported_families()}. {INSTEAD}")


def gguf_architecture(config) -> str:
    """llama.cpp's name for this model's architecture, or GGUFExportError naming the supported ones."""
    return gguf_family(config).arch


def gguf_support(config) -> tuple[bool, str]:
    """Whether GGUF export writes this model (a transformers config, or a model_type / architecture name), and
    one line saying so: the llama.cpp architecture it becomes, or why not and what works instead."""
    try:
        family = gguf_family(config)
    except GGUFExportError as exc:
        return False, str(exc)
    return True, f"GGUF export writes {family.label} as llama.cpp's '{family.arch}' architecture."


def config_value(config, name: str):
    """``config.<name>`` (None when absent), or the first layer's where transformers keeps the value per layer and
    refuses a global read (Gemma 4's head_dim and KV heads; the family's hparams write each layer's own)."""
    try:
        return getattr(config, name, None)
    except RuntimeError:  # transformers' AmbiguousGlobalPerLayerAttributeError
        return getattr(config.per_layer_config[0], name, None)


def _rope(config) -> tuple[float, dict]:
    """(rope theta, scaling parameters); transformers 5 keeps both in rope_parameters."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    legacy = getattr(config, "rope_scaling", None) or {}
    if isinstance(legacy, dict):
        params = {**legacy, **params}
    if isinstance(params.get("full_attention"), dict):  # one set per layer type (Gemma 3, OLMo 3): the global one
        params = dict(params["full_attention"])
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


def keeps_f32(gguf_name: str, ndim: int) -> bool:
    """Tensors llama.cpp's quantiser leaves as they are: vectors, biases (gpt-oss's expert biases are 2-D),
    the MoE router, rope factors, and the linear-attention conv kernels (llama.cpp's ssm_conv reads F32 only)."""
    return ndim < 2 or not gguf_name.endswith(".weight") or any(
        part in gguf_name for part in ("ffn_gate_inp", "rope_", "ssm_conv1d"))


def _tensor_type(gguf_name: str, data, gguf_type: str):
    """The GGML type for one tensor: norms and biases stay F32; blocks need whole rows of 32."""
    import gguf

    q = gguf.GGMLQuantizationType
    if keeps_f32(gguf_name, data.ndim):
        return q.F32
    wanted = {"f16": q.F16, "q8_0": q.Q8_0, "q4_0": q.Q4_0}[gguf_type]
    if wanted == q.Q4_0 and gguf_name.split(".")[0] in ("token_embd", "output"):
        wanted = q.Q8_0  # as llama.cpp's Q4_0 recipe: embeddings and output lose the most at 4 bits
    if wanted in (q.Q8_0, q.Q4_0) and data.shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0]:
        return q.F16
    return wanted


def _write_hparams(writer, config, family) -> tuple[dict, int]:
    """The family's own metadata, then what every family shares where the family did not say otherwise (Gemma 4:
    the full-attention layers' head size and rope dimensions); returns (rope parameters, head dim)."""
    import gguf

    if family.hparams:
        family.hparams(writer, config)
    written = set().union(*writer.kv_data)
    arch = writer.arch

    def common(key: str, add, value) -> None:
        if key.format(arch=arch) not in written:
            add(value)

    n_head = config.num_attention_heads
    head_dim = config_value(config, "head_dim") or config.hidden_size // n_head
    theta, rope = _rope(config)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    partial = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
    keys = gguf.Keys
    common(keys.LLM.CONTEXT_LENGTH, writer.add_context_length, int(getattr(config, "max_position_embeddings", 2048)))
    common(keys.LLM.EMBEDDING_LENGTH, writer.add_embedding_length, config.hidden_size)
    common(keys.LLM.BLOCK_COUNT, writer.add_block_count, config.num_hidden_layers)
    common(keys.LLM.FEED_FORWARD_LENGTH, writer.add_feed_forward_length, config.intermediate_size)
    common(keys.Attention.HEAD_COUNT, writer.add_head_count, n_head)
    common(keys.Attention.HEAD_COUNT_KV, writer.add_head_count_kv, config_value(config, "num_key_value_heads") or n_head)
    common(keys.Attention.LAYERNORM_RMS_EPS, writer.add_layer_norm_rms_eps, float(config.rms_norm_eps))
    common(keys.Rope.FREQ_BASE, writer.add_rope_freq_base, theta)
    common(keys.Rope.DIMENSION_COUNT, writer.add_rope_dimension_count, int(head_dim * partial))
    if head_dim != config.hidden_size // n_head:
        common(keys.Attention.KEY_LENGTH, writer.add_key_length, head_dim)
        common(keys.Attention.VALUE_LENGTH, writer.add_value_length, head_dim)
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope.get("factor", 1.0)))
    return rope, head_dim


def _gguf_tensors(model, family, names, tied: bool):
    """(llama.cpp name, float32 array) for each weight, after the family's reshaping, norm offset and rope layout."""
    config = model.config
    n_head = config.num_attention_heads
    n_kv = config_value(config, "num_key_value_heads") or n_head
    for hf_name, tensor in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or "rotary_emb" in hf_name:
            continue
        data = tensor.detach().float().cpu().numpy()
        pieces = family.tensors(hf_name, data, config) if family.tensors else None
        for piece_name, piece in pieces or [(hf_name, data)]:
            gguf_name = names.get_name(piece_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise GGUFExportError(f"no GGUF name for tensor '{piece_name}' of {family.label} "
                                      f"({family.arch}). {INSTEAD}")
            if not gguf_name.endswith((".weight", ".bias")) and gguf_name.split(".")[-1] not in family.bare:
                gguf_name += ".weight"  # parameters without a suffix (attention sinks, fused experts, layer scalars)
            if family.norm_offset and piece_name.endswith("norm.weight"):
                piece = piece + family.norm_offset
            if family.rope == "norm" and piece_name.endswith("q_proj.weight"):
                piece = _permute(piece, n_head, n_head)
            elif family.rope == "norm" and piece_name.endswith("k_proj.weight"):
                piece = _permute(piece, n_head, n_kv)
            yield gguf_name, piece


def write_gguf(model, tokenizer, tokenizer_dir: str | Path, out_file: str | Path, *, gguf_type: str = "f16",
               name: str = "model", eos_token_id: int | None = None,
               on_progress: Callable[[str, float], None] | None = None) -> GGUFInfo:
    """Write ``model`` (merged, 16/32-bit) as ``out_file``. ``tokenizer_dir`` holds the saved tokenizer
    (tokenizer.json, tokenizer_config.json, chat template); ``eos_token_id`` is the token that ended
    answers in training."""
    import gguf
    from gguf.quants import quantize

    from lora_tui.core.export.gguf_vocab import VocabError, merges_of, pre_tokenizer_name, read_vocab, space_prefix
    from lora_tui.core.export.gguf_kquant import KQUANT_TYPES, is_70b, kquant_missing, kquant_type_name, quantize_rows

    report = on_progress or (lambda message, fraction: None)
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, not '{gguf_type}'.")
    kquant = gguf_type in KQUANT_TYPES
    if kquant and kquant_missing():
        raise GGUFExportError(kquant_missing())
    config = model.config
    family = gguf_family(config)
    arch_name = family.arch
    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    tokenizer_dir, out_file = Path(tokenizer_dir), Path(out_file)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise GGUFExportError(f"{tokenizer_dir} has no tokenizer.json (a fast tokenizer is needed for GGUF).")
    n_head, n_layer = config.num_attention_heads, config.num_hidden_layers
    n_kv = config_value(config, "num_key_value_heads") or n_head
    vocab_size = model.get_input_embeddings().weight.shape[0]
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special_ids = {i for i, t in decoder.items() if getattr(t, "special", False)}
    user_ids = {i for i, t in decoder.items() if not getattr(t, "special", False)}
    try:
        kind, tokens, scores, types, tok_json, exact_scores = read_vocab(tokenizer_dir, vocab_size, special_ids, user_ids)
    except VocabError as exc:
        raise GGUFExportError(str(exc)) from None
    pre = pre_tokenizer_name(tok_json, getattr(config, "model_type", ""), tokenizer.get_vocab()) if kind == "gpt2" else "default"
    info = GGUFInfo(out_file, arch_name, gguf_type, None, pre)
    if not exact_scores:
        info.notes.append("SentencePiece scores derived from token order (pip install sentencepiece, with the base "
                          "model's tokenizer.model present, writes the exact ones)")
    if pre == "default" and kind == "gpt2":
        info.notes.append("pre-tokenizer not recognised: written as llama.cpp's 'default', whose splitting may differ "
                          "from the tokenizer's (the round-trip check compares llama.cpp's tokens with training's)")
    if _rope(config)[1].get("truncate") is False:
        info.notes.append("llama.cpp rounds YaRN's correction range, this model (truncate: false) does not: a few "
                          "rope dimensions differ slightly in llama.cpp")

    writer = gguf.GGUFWriter(str(out_file), arch_name, use_temp_file=True)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    rope, head_dim = _write_hparams(writer, config, family)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{gguf_type.upper()}"))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(space_prefix(tok_json))
    merges = merges_of(tok_json)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=merges is None, n_vocab=len(tokens))
    if merges is not None:
        special.merges = merges
    if eos_token_id is not None:
        special.special_token_ids["eos"] = int(eos_token_id)  # the end token training taught
    special.add_to_gguf(writer, quiet=True)
    eos = special.special_token_ids.get("eos")
    info.eos_token = tokenizer.convert_ids_to_tokens(eos) if eos is not None else None
    if special.chat_template is None:
        info.notes.append("no chat template in the tokenizer: none written")

    report(f"Converting tensors to {gguf_type.upper()}", 0.75)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    n_expert = int(getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None) or 0)
    fallbacks: dict[str, int] = {}
    if (rope.get("rope_type") or rope.get("type")) == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          _llama3_rope_factors(rope, _rope(config)[0], head_dim))
    for extra_name, extra_data in family.extra(config) if family.extra else []:
        writer.add_tensor(extra_name, extra_data)
    for gguf_name, data in _gguf_tensors(model, family, gguf.get_tensor_name_map(arch, n_layer), tied):
        if kquant and not keeps_f32(gguf_name, data.ndim):
            name_of_type = kquant_type_name(gguf_name, data.shape[-1], gguf_type, n_layer, tied=tied,
                                            big_model=is_70b(arch_name, n_layer, n_head, n_kv), n_expert=n_expert)
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
    write_atomically(writer, out_file)
    return info


def write_atomically(writer, out_file: Path) -> None:
    """Write a filled GGUFWriter to ``out_file`` through a temporary name, so no half file is ever left there."""
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


def _header(path: str | Path) -> tuple[dict, list[int]]:
    """(metadata, GGML type id of each tensor). transformers' GGUF header reader walks the vocabulary's strings
    without decoding them (0.05 s for a 49,152-token file here); the gguf package's GGUFReader builds an object
    per token (8.8 s), so it is only the fallback for a transformers without that reader."""
    try:
        from transformers.integrations.gguf import reader

        blob = reader._mapped(str(path))
        metadata, count, pos = reader._read_metadata(blob, str(path), ("",))
        return metadata, [entry[2] for entry in reader._read_tensor_table(blob, count, pos)[0]]
    except (ImportError, AttributeError, TypeError):
        import gguf

        parsed = gguf.GGUFReader(str(path))
        metadata = {key: field.contents() for key, field in parsed.fields.items() if key != "tokenizer.ggml.tokens"}
        tokens = parsed.fields.get("tokenizer.ggml.tokens")
        metadata["tokenizer.ggml.tokens"] = len(tokens.data) if tokens else 0
        return metadata, [int(t.tensor_type) for t in parsed.tensors]


def read_gguf_facts(path: str | Path) -> dict:
    """What a GGUF file says about itself: architecture, file type, EOS / EOT ids and chat template."""
    import gguf

    metadata, type_ids = _header(path)
    tokens = metadata.get("tokenizer.ggml.tokens")  # the count: the strings themselves are not read
    return {"architecture": metadata.get("general.architecture"), "file_type": metadata.get("general.file_type"),
            "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
            "eot_token_id": metadata.get("tokenizer.ggml.eot_token_id"),
            "chat_template": metadata.get("tokenizer.chat_template"), "tokens": tokens if isinstance(tokens, int) else 0,
            "types": sorted({gguf.GGMLQuantizationType(t).name for t in type_ids})}
