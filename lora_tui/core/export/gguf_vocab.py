"""The tokenizer half of a GGUF file: llama.cpp's token list, scores, types and pre-tokenizer name, read with
the ``gguf`` package's own vocabulary readers (``BpeVocab``, ``SentencePieceVocab``, ``LlamaHfVocab``).

Must not: import gguf at module top, print, or write files.
"""

from __future__ import annotations

import json
from pathlib import Path


class VocabError(ValueError):
    """The tokenizer cannot be written as a GGUF vocabulary."""


def pre_tokenizer_name(tokenizer_json: dict, model_type: str, vocab: dict) -> str:
    """llama.cpp's name for how text is split before BPE (tokenizer.ggml.pre), from the tokenizer itself first."""
    text = json.dumps(tokenizer_json.get("pre_tokenizer") or {})
    if '"Digits"' in text and '"individual_digits": true' in text:
        return "smollm"  # SmolLM / SmolLM2: digits split one by one, then GPT-2 byte level
    if "<|begin_of_text|>" in vocab:
        return "llama-bpe"  # Llama 3's tokenizer (SmolLM3 uses it too)
    if model_type in ("qwen2", "qwen3", "qwen3_moe"):
        return "qwen2"
    return "default"


def read_vocab(tokenizer_dir: Path, vocab_size: int, special_ids: set[int], user_ids: set[int]):
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
        raise VocabError(f"the tokenizer has {len(tokens)} tokens but the model's embedding only {vocab_size}.")
    return kind, tokens, scores, types, data, exact_scores
