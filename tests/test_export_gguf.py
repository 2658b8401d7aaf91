"""GGUF export and the round-trip check (issue 11) on tiny random models: llama (with and without a
chat template), Qwen2 (attention biases), an unsupported architecture, and a tampered artefact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.chat import make_adapter, make_fake_run

ROOT = Path(__file__).resolve().parents[1]


def _tiny(out: Path, tokenizer_dir: Path, arch: str, *, drop_template: bool = False) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    kw = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=arch == "llama", bos_token_id=tokenizer.bos_token_id,
              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**kw)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**kw))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):  # Qwen2's q/k/v biases: zero by default would hide a lost bias
                param.normal_(0, 0.2)
    model.save_pretrained(out)
    if drop_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    if drop_template:
        (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


def _run(root: Path, base: Path, name: str, template: str = "auto") -> Path:
    from lora_tui.core.config import load_config, save_config

    run = Path(make_fake_run(root, base, name=name, with_adapter=False))
    make_adapter(base, run / "adapter", scale=0.05)
    config = load_config(run / "config.yaml")
    config.data.train, config.data.validation = str(ROOT / "sample_data/train.jsonl"), str(ROOT / "sample_data/valid.jsonl")
    config.data.template = template
    save_config(config, run / "config.yaml")
    return run


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, embedded_model_dir):
    root = tmp_path_factory.mktemp("gguf")
    return _run(root, _tiny(root / "base-llama", embedded_model_dir, "llama"), "llama-run")


def _check(run, path: Path):
    from lora_tui.core.export.check import verify_export

    return verify_export(run, path.parent, gguf_file=path.name, n_prompts=2, n_rows=3, max_new_tokens=8)


def test_llama_f16_gguf_round_trip_carries_tokenizer_template_and_eos(llama_run):
    from lora_tui.core.export.artefacts import export_gguf, export_summary
    from lora_tui.core.export.gguf import read_gguf_facts

    path = export_gguf(llama_run, gguf_type="f16")
    assert path == llama_run / "gguf" / "llama-run-f16.gguf"
    facts = read_gguf_facts(path)
    assert facts["architecture"] == "llama" and facts["types"] == ["F16", "F32"]
    assert facts["eos_token_id"] == 2 and "<|im_start|>" in facts["chat_template"]  # <|im_end|>: what training taught
    modelfile = (path.parent / "Modelfile-f16").read_text()
    assert "FROM ./llama-run-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    result = _check(llama_run, path)
    assert result.verdict == "identical", result.table()
    assert result.template_same and result.tokens_same and result.eos_ok and result.ok
    assert export_summary(llama_run)["gguf"][0]["type"] == "f16"


def test_q4_0_is_smaller_and_the_verdict_says_how_it_moves(llama_run):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.gguf import read_gguf_facts

    path = export_gguf(llama_run, gguf_type="q4_0")
    assert set(read_gguf_facts(path)["types"]) == {"F32", "Q4_0", "Q8_0"}  # embeddings kept at 8 bits
    result = _check(llama_run, path)
    assert result.delta is not None and result.delta != 0.0  # 4-bit weights cannot be exact
    # a random adapter on 3 rows: too little to judge the gain, so the q4_0 band judges the move
    assert result.gguf_type == "q4_0" and result.verdict == "normal" and result.ok, result.table()
    assert "only 3 held-out rows" in result.verdict_words and "normal for q4_0" in result.table()


def test_qwen2_biases_survive_the_round_trip(tmp_path, embedded_model_dir):
    from lora_tui.core.export.artefacts import export_gguf

    run = _run(tmp_path, _tiny(tmp_path / "base-qwen2", embedded_model_dir, "qwen2"), "qwen-run")
    path = export_gguf(run, gguf_type="f16")
    result = _check(run, path)
    assert result.verdict == "identical", result.table()


def test_model_without_chat_template_exports_the_training_format(tmp_path, embedded_model_dir):
    from lora_tui.core.export.artefacts import export_gguf, merge_adapter
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gguf import read_gguf_facts

    run = _run(tmp_path, _tiny(tmp_path / "base-plain", embedded_model_dir, "llama", drop_template=True),
               "plain-run", template="alpaca")
    path = export_gguf(run, gguf_type="f16")
    assert "### Instruction:" in read_gguf_facts(path)["chat_template"]
    result = _check(run, path)
    assert result.template_same and result.eos_ok and result.ok, result.table()
    merged = merge_adapter(run, tmp_path / "merged")
    checked = verify_export(run, merged, n_prompts=1, n_rows=2, max_new_tokens=4)
    assert checked.template_same and checked.eos_ok and checked.verdict == "identical", checked.table()


def test_a_tampered_artefact_fails_the_template_and_eos_check(tmp_path, llama_run):
    from lora_tui.core.export.artefacts import merge_adapter
    from lora_tui.core.export.check import verify_export

    merged = merge_adapter(llama_run, tmp_path / "merged")
    (merged / "chat_template.jinja").unlink()
    config = json.loads((merged / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config["eos_token"] = "<|endoftext|>"
    (merged / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("generation_config.json", "config.json"):
        data = json.loads((merged / name).read_text())
        data["eos_token_id"] = 0
        (merged / name).write_text(json.dumps(data))
    result = verify_export(llama_run, merged, n_prompts=1, n_rows=2, max_new_tokens=4)
    assert not result.template_same and not result.eos_ok and not result.ok
    assert "no chat template" in " ".join(result.problems) and "NO" in result.table()


def test_unsupported_architecture_names_the_supported_ones(tmp_path, llama_run):
    from transformers import GPT2Config

    from lora_tui.core.config import load_config, save_config
    from lora_tui.core.export.artefacts import ExportError, export_gguf
    from lora_tui.core.export.gguf import GGUFExportError, gguf_architecture

    with pytest.raises(GGUFExportError, match="GPT2LMHeadModel.*Llama 2 / 3.x.*Mistral.*Qwen2 / Qwen2.5.*Qwen3.*Gemma 2"):
        gguf_architecture(GPT2Config(architectures=["GPT2LMHeadModel"]))
    gpt2 = tmp_path / "gpt2"
    GPT2Config(architectures=["GPT2LMHeadModel"]).save_pretrained(gpt2)
    config = load_config(llama_run / "config.yaml")
    original = config.model.name
    config.model.name = str(gpt2)
    save_config(config, llama_run / "config.yaml")
    try:
        with pytest.raises(ExportError, match="does not support GPT2LMHeadModel"):
            export_gguf(llama_run, tmp_path / "x.gguf")
        assert not (tmp_path / "x.gguf").exists()
    finally:
        config.model.name = original
        save_config(config, llama_run / "config.yaml")


def _sentencepiece_style_tokenizer(out: Path, template_from: Path) -> Path:
    """A small byte-fallback BPE vocabulary as Llama 2 / Mistral ship it (tokenizer.json, no tokenizer.model)."""
    from transformers import LlamaTokenizer

    base = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    chars = list("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!'-:|<>/_[]#")
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a"), ("o", "n"), ("e", "r"), ("▁", "w")]
    vocab = {t: i for i, t in enumerate(base + chars)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = (template_from / "chat_template.jinja").read_text()
    tokenizer.save_pretrained(out)
    return out


def test_sentencepiece_style_vocabulary_round_trips(tmp_path, embedded_model_dir):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.gguf import read_gguf_facts

    tokenizer = _sentencepiece_style_tokenizer(tmp_path / "spm-tokenizer", embedded_model_dir)
    run = _run(tmp_path, _tiny(tmp_path / "base-spm", tokenizer, "llama"), "spm-run")
    path = export_gguf(run, gguf_type="f16")
    from transformers import AutoTokenizer

    facts, spm = read_gguf_facts(path), AutoTokenizer.from_pretrained(tokenizer)
    assert facts["tokens"] == len(spm) and facts["eos_token_id"] == spm.convert_tokens_to_ids("<|im_end|>")
    result = _check(run, path)
    assert result.tokens_same and result.template_same and result.eos_ok and result.verdict == "identical", result.table()
