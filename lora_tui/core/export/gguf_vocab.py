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
    pre = tokenizer_json.get("pre_tokenizer") or {}
    text = json.dumps(pre)
    if '"Digits"' in text and '"individual_digits": true' in text:
        return "smollm"  # SmolLM / SmolLM2: digits split one by one, then GPT-2 byte level
    if "<|begin_of_text|>" in vocab:
        return "llama-bpe"  # Llama 3's tokenizer (SmolLM3 uses it too)
    if model_type in ("qwen3_5", "qwen3_5_text"):
        return "qwen35" if "\\p{M}" in text else "qwen2"  # Qwen3.5's own regex keeps combining marks in words
    if model_type in ("qwen2", "qwen3", "qwen3_moe"):
        return "qwen2"
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        # GPT-2's own regex, llama.cpp's "gpt-2" (its "default" splits a space from the non-ASCII punctuation after
        # it: the embedded SmolLM2 tokenizer's sample rows came out differently in 397 of 690, in "gpt-2" in none)
        return "gpt-2"
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


def merges_of(tokenizer_json: dict) -> list[str] | None:
    """The BPE merges as llama.cpp reads them ("a b"), from the already parsed tokenizer.json; None where the gguf
    package's SpecialVocab must spell them (a merge part holding a space, or merges in another format). The same
    strings SpecialVocab builds, without its per-character pass (1.5 s for 49k merges, 5 s for Qwen's 151k)."""
    merges = (tokenizer_json.get("model") or {}).get("merges")
    if not isinstance(merges, list) or not merges:
        return None
    if all(isinstance(m, str) for m in merges):
        return merges
    pairs = all(isinstance(m, list) and len(m) == 2 for m in merges)
    if pairs and not any(" " in part for pair in merges for part in pair):
        return [f"{a} {b}" for a, b in merges]
    return None


def space_prefix(tokenizer_json: dict) -> bool:
    """llama.cpp's tokenizer.ggml.add_space_prefix for a SentencePiece-style vocabulary: llama.cpp puts a "▁"
    before the text at the start and after every special token when it is set. The tokenizer does so where a
    Prepend("▁") normaliser or a Metaspace "always" runs on every piece of text (Llama 2's legacy tokenizers); a
    Metaspace "first" (Mistral's, the non-legacy ones) prefixes only the input's very start, which a chat template
    fills with a special token, and Gemma's prefixes nothing: there llama.cpp must not (it did after every turn's
    role tag, so no chat tokenized as in training)."""
    def parts(node):
        if isinstance(node, dict):
            yield node
            for child in node.get("normalizers") or node.get("pretokenizers") or []:
                yield from parts(child)

    for part in parts(tokenizer_json.get("normalizer")):
        if part.get("type") == "Prepend" and part.get("prepend") == "\u2581":
            return True
    for part in parts(tokenizer_json.get("pre_tokenizer")):
        if part.get("type") == "Metaspace":
            return part.get("prepend_scheme", "always" if part.get("add_prefix_space", True) else "never") == "always"
    return False

