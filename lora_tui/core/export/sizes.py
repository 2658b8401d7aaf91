"""How big each export will be, before anything is written: every GGUF weight type of a base model, the
merged model, the adapter.

A GGUF estimate counts each weight tensor's values (shapes from the base model's safetensors headers;
nothing is loaded) at the bits of the GGML type the writer will give that tensor (the writer's own
rules: ``gguf._tensor_type`` and ``gguf_kquant.kquant_type_name``, so the fall-backs of rows that are
not whole blocks are counted), plus the vocabulary the file carries (tokens and merges as GGUF strings).

Must not: load a model or import torch, print, or write files.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from lora_tui.core.export.choices import GGUF_TYPES


def _shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the headers of the safetensors files in ``folder``."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def _model_folder(base_model: str, revision: str | None) -> Path | None:
    from lora_tui.core.model.models import model_kind, resolve_model_path

    if model_kind(base_model) != "hub":
        return Path(resolve_model_path(base_model))
    try:  # a hub model that was trained on here is in the local cache
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base_model, revision=revision, local_files_only=True,
                                      allow_patterns=["*.safetensors", "*.json"]))
    except Exception:
        return None


def gguf_sizes(base_model: str, *, trust_remote_code: bool = False, revision: str | None = None) -> dict[str, int]:
    """Estimated bytes of the GGUF file of each type in ``GGUF_TYPES`` ({} when the shapes cannot be read here)."""
    import gguf

    from lora_tui.core.export.gguf import GGUFExportError, _tensor_type, gguf_architecture
    from lora_tui.core.export.gguf_kquant import KQUANT_TYPES, is_70b, kquant_type_name
    from lora_tui.core.model.models import ModelSourceError, load_model_config

    try:
        config = load_model_config(base_model, trust_remote_code, revision)
        arch_name = gguf_architecture(config)
        folder = _model_folder(base_model, revision)
    except (GGUFExportError, ModelSourceError, OSError):
        return {}
    shapes = _shapes(folder) if folder is not None else {}
    if not shapes:
        return {}
    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    n_layer, n_head = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    tied = bool(getattr(config, "tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(arch, n_layer)
    extra = _vocabulary_bytes(folder / "tokenizer.json")
    sizes = {}
    for gguf_type in GGUF_TYPES:
        total = extra
        for hf_name, shape in shapes.items():
            if (tied and hf_name == "lm_head.weight") or "rotary_emb" in hf_name:
                continue
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias")) or hf_name
            values = 1
            for dim in shape:
                values *= dim
            if len(shape) >= 2 and gguf_type in KQUANT_TYPES:
                type_name = kquant_type_name(gguf_name, shape[-1], gguf_type, n_layer, tied=tied,
                                             big_model=is_70b(arch_name, n_layer, n_head, n_kv))
            else:
                type_name = _tensor_type(gguf_name, SimpleNamespace(ndim=len(shape), shape=shape), gguf_type).name
            block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
            total += values * block_bytes // block
        sizes[gguf_type] = total
    return sizes


def _vocabulary_bytes(tokenizer_json: Path) -> int:
    """What the file's vocabulary takes: each token and BPE merge as a GGUF string (8-byte length + UTF-8), a
    4-byte type per token and, for SentencePiece, a 4-byte score (the other keys and tensor infos: a few KiB)."""
    import json

    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    model = data.get("model") or {}
    vocab = model.get("vocab") or {}
    tokens = list(vocab) if isinstance(vocab, dict) else [v[0] for v in vocab]
    tokens += [t.get("content", "") for t in data.get("added_tokens") or [] if t.get("content") not in vocab]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []]
    score = 0 if model.get("type") == "BPE" and not model.get("byte_fallback") else 4  # scores: SentencePiece only
    return sum(8 + len(t.encode()) + 4 + score for t in tokens) + sum(8 + len(m.encode()) for m in merges) + 16384


def adapter_values(adapter_dir: str | Path) -> int:
    """How many values the adapter's weights hold (its safetensors headers)."""
    total = 0
    for shape in _shapes(Path(adapter_dir)).values():
        values = 1
        for dim in shape:
            values *= dim
        total += values
    return total
