"""GGUF export of every family the writer knows (issue 23 item 4), each loaded back in llama.cpp itself.

One tiny random model per family (the family matrix's, lora_tui/core/model/tiny.py: hidden 64, 2 layers, the
family's chat template and end-of-turn token), its weights redrawn larger and its vectors off their neutral values
(tests/support/gguf_runs.py), with a small LoRA adapter on every linear layer, built once per session. For each
family the run is exported as f16 with ``export_gguf`` (the CLI's path), and as q8_0 and q4_k_m with ``write_gguf``
from the merged model already in memory (what ``export_gguf`` does after loading it), and llama.cpp scores one
conversation against the merged model in transformers: f16 must choose the merged model's next token almost
everywhere, the quantised files must stay finite and near it. The product's full round-trip check
(``verify_export``) runs on the same f16 file for the families that each need a different mapping (norm offset
and sliding windows, stacked experts, fused projections, Qwen3.5's linear attention, Gemma 4's per-layer
embeddings); benchmarks/gguf_families.py runs it on every family and type. Each family-specific transform is shown
to matter: the file written without it answers differently in llama.cpp.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from lora_tui.core.model.tiny import TINY_FAMILIES
from tests.support.gguf_runs import llamacpp_against, merged_reference

HAS_LLAMACPP = importlib.util.find_spec("xllamacpp") is not None and importlib.util.find_spec("libgguf") is not None
needs_llamacpp = pytest.mark.skipif(not HAS_LLAMACPP,
                                    reason='needs llama.cpp and K-quants: pip install "lora-tui[llamacpp,gguf-kquant]"')
WRITTEN = list(TINY_FAMILIES) + ["phi4_mini", "gemma4_shared_kv"]
# qwen3_5: transformers' GGUF loader cannot read llama.cpp's qwen35 at all; the check reads the file in llama.cpp
CHECKED = ("gemma3", "qwen3_moe", "phi3", "qwen3_5", "gemma4")
# f16 in llama.cpp against float32 PyTorch: the same next token almost everywhere (a layout bug gives < 60 %)
F16_SAME_TOP = 0.95
# gpt-oss: llama.cpp rounds YaRN's correction range outward, transformers does not for gpt-oss (truncate: false);
# the same tiny model with truncate: true scores mean |Δ log p| 0.002 (measured), with false 0.038.
F16_DELTA = {"gpt_oss": 0.05}


@pytest.fixture(scope="session")
def f16_file(gguf_run):
    """``f16_file(family)``: the run's f16 GGUF written once by ``export_gguf`` (the CLI's path), for every test."""
    from lora_tui.core.export.artefacts import export_gguf

    written: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in written:
            written[family] = export_gguf(gguf_run(family), gguf_type="f16")
        return written[family]

    return get


@needs_llamacpp
@pytest.mark.parametrize("family", WRITTEN)
def test_family_gguf_answers_like_the_merged_model_in_llama_cpp(family, gguf_run, f16_file, tmp_path):
    from lora_tui.core.export.check import learned_end_token
    from lora_tui.core.export.gguf import read_gguf_facts, write_gguf

    reference = merged_reference(gguf_run(family))
    model, tokenizer, _, _ = reference
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    figures = {}
    for gguf_type in ("f16", "q8_0", "q4_k_m"):
        if gguf_type == "f16":
            path = f16_file(family)
        else:  # the other types from the same merged model, as export_gguf writes them once it has loaded it
            path = tmp_path / f"{gguf_type}.gguf"
            write_gguf(model, tokenizer, tmp_path / "tokenizer", path, gguf_type=gguf_type,
                       eos_token_id=learned_end_token(tokenizer))
        facts = read_gguf_facts(path)
        assert facts["eos_token_id"] == learned_end_token(tokenizer)  # the family's end-of-turn, as trained
        assert facts["chat_template"] == tokenizer.chat_template
        figures[gguf_type] = same, delta = llamacpp_against(reference, path)
        assert math.isfinite(delta), (family, gguf_type)
    print(f"\n{family}: " + ", ".join(f"{t} same next token {s:.0%}, mean |Δ log p| {d:.4f}" for t, (s, d) in figures.items()))
    assert figures["f16"][0] >= F16_SAME_TOP and figures["f16"][1] < F16_DELTA.get(family, 0.02), figures
    # 8 and ~5 bits per weight (64-wide rows take Q5_0 / Q8_0, as llama.cpp's fallbacks) move a random model with
    # std 0.2 weights far more than a trained one (measured: q8_0 80-100 %, q4_k_m 27-96 % same next token), but not
    # to another model (the llama file with a wrong rope layout: 7 %)
    assert figures["q8_0"][0] >= 0.75 and figures["q4_k_m"][0] >= 0.2, figures


@needs_llamacpp
@pytest.mark.parametrize("family", CHECKED)
def test_round_trip_check_passes_in_llama_cpp(family, gguf_run, f16_file):
    from lora_tui.core.export.check import verify_export

    path = f16_file(family)
    result = verify_export(gguf_run(family), path.parent, gguf_file=path.name, n_prompts=1, n_rows=3, max_new_tokens=8)
    print(f"\n{family}: {result.summary()}")
    assert result.runtime.startswith("llama.cpp") and result.ok, result.table()
    assert result.template_same and result.tokens_same and result.eos_ok, result.table()


def _without_value_head_regrouping(name, data, config):
    from lora_tui.core.export import gguf_hybrid

    original = gguf_hybrid._tile_heads
    gguf_hybrid._tile_heads = lambda data, *args: data
    try:
        return gguf_hybrid.qwen35_tensors(name, data, config)
    finally:
        gguf_hybrid._tile_heads = original


def _without_proportional_rope(config):
    import numpy as np

    from lora_tui.core.export import gguf_hybrid

    return [(name, np.ones_like(factors)) for name, factors in gguf_hybrid.gemma4_extra(config)]


# (family, its entry in gguf_families.FAMILIES, the entry's field, the wrong value): llama.cpp's rotation of
# interleaved pairs (measured: 3 % same next token without it, 100 % with), Qwen3.5's value heads in llama.cpp's
# tiled order (29 %, 100 % with), Gemma 4's unrotated part of the full-attention heads (95 %, but mean |Δ log p|
# 0.138 against 0.002 with it)
LAYOUT_BUGS = {"llama": ("LlamaForCausalLM", "rope", "neox"),
               "qwen3_5": ("Qwen3_5ForCausalLM", "tensors", _without_value_head_regrouping),
               "gemma4": ("Gemma4ForCausalLM", "extra", _without_proportional_rope)}


@needs_llamacpp
@pytest.mark.parametrize("family", sorted(LAYOUT_BUGS))
def test_a_layout_bug_is_what_the_llama_cpp_comparison_catches(family, gguf_run, tmp_path, monkeypatch):
    """The comparison above is not blind: the same model written without one of the family's transforms picks
    other next tokens in llama.cpp, or moves each token's log-probability far beyond f16 rounding."""
    import dataclasses

    from lora_tui.core.export import gguf_families
    from lora_tui.core.export.check import learned_end_token
    from lora_tui.core.export.gguf import write_gguf

    key, field, wrong = LAYOUT_BUGS[family]
    monkeypatch.setitem(gguf_families.FAMILIES, key, dataclasses.replace(gguf_families.FAMILIES[key], **{field: wrong}))
    reference = merged_reference(gguf_run(family))
    model, tokenizer, _, _ = reference
    tokenizer.save_pretrained(tmp_path)
    write_gguf(model, tokenizer, tmp_path, tmp_path / "wrong.gguf", eos_token_id=learned_end_token(tokenizer))
    same, delta = llamacpp_against(reference, tmp_path / "wrong.gguf")
    assert same < 0.6 or delta > 0.1, (same, delta)


# A config llama.cpp would load but compute differently, edited into the run's base config.json: one line, no loading.
REFUSED = {"qwen3_5": ({"layer_types": ["full_attention", "linear_attention"]}, "full-attention layer every n-th"),
           "gemma4": ({"enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32},
                      "mixture-of-experts")}


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_a_config_llama_cpp_would_compute_differently_is_refused_in_one_line_before_loading(
        family, gguf_run, tmp_path, monkeypatch, capsys):
    from lora_tui.cli import main
    from lora_tui.core.config import load_config, save_config
    from lora_tui.core.export import artefacts
    from lora_tui.core.export.gguf import gguf_support

    values, words = REFUSED[family]
    run = tmp_path / "run"
    shutil.copytree(gguf_run(family), run, ignore=shutil.ignore_patterns("gguf", "exports.json"))
    config = load_config(run / "config.yaml")
    base = tmp_path / "base"
    shutil.copytree(config.model.name, base)
    config_json = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config_json, **values}))
    config.model.name = str(base)
    save_config(config, run / "config.yaml")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(artefacts, "load_merged", no_loading)
    capsys.readouterr()
    assert main(["export", str(run), "--gguf", "--gguf-type", "f16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "merged model" in err[0] and "Traceback" not in err[0], err
    supported, line = gguf_support(_config(base))
    assert not supported and words in line and "\n" not in line


def _config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def test_gguf_support_answers_for_configs_names_and_refusals():
    from transformers import GPT2Config, Gemma2Config, MinistralConfig, Qwen3_5TextConfig

    from lora_tui.core.export.gguf import gguf_support

    assert gguf_support("qwen3") == (True, "GGUF export writes Qwen3 as llama.cpp's 'qwen3' architecture.")
    assert gguf_support("Gemma3ForCausalLM")[0] and gguf_support("gpt_oss")[0]
    assert gguf_support("qwen3_5_text") == (True, "GGUF export writes Qwen3.5 (hybrid linear attention) as "
                                                  "llama.cpp's 'qwen35' architecture.")
    assert gguf_support("gemma4_text") == (True, "GGUF export writes Gemma 4 (text) as llama.cpp's 'gemma4' architecture.")
    ok, line = gguf_support(GPT2Config(architectures=["GPT2LMHeadModel"]))
    assert not ok and "GPT2LMHeadModel" in line and "Qwen3-MoE" in line and "merged model" in line
    # configs llama.cpp would load but compute differently are refused with the reason
    sliding = MinistralConfig(head_dim=16, sliding_window=8, max_position_embeddings=2048, num_hidden_layers=2,
                              layer_types=["sliding_attention", "full_attention"], architectures=["MinistralForCausalLM"])
    ok, line = gguf_support(sliding)
    assert not ok and "sliding window" in line
    gemma = Gemma2Config(head_dim=16, query_pre_attn_scalar=20, num_hidden_layers=2, architectures=["Gemma2ForCausalLM"])
    ok, line = gguf_support(gemma)
    assert not ok and "query_pre_attn_scalar" in line
    qwen = Qwen3_5TextConfig(num_hidden_layers=4, layer_types=["linear_attention"] * 3 + ["full_attention"],
                             linear_key_head_dim=64, linear_value_head_dim=128, architectures=["Qwen3_5ForCausalLM"])
    ok, line = gguf_support(qwen)
    assert not ok and "key and value heads differ" in line


def test_a_composite_is_written_only_where_its_causal_lm_is_the_language_model_alone():
    """The product trains what transformers' AutoModelForCausalLM loads: for Qwen3.5's composite checkpoints the
    language model alone (written), for Gemma 3 / 4's the whole model with its vision tower (a GGUF would lose it).
    The tables the Model screen reads without transformers (gguf_families) agree with transformers' own."""
    from transformers import Gemma4Config, Qwen3_5Config
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL_LM

    from lora_tui.core.export.gguf import gguf_support
    from lora_tui.core.export.gguf_families import FAMILIES as WRITERS, MULTIMODAL_TYPES
    from lora_tui.core.model.families import FAMILIES

    for model_type in (t for family in FAMILIES for t in family.model_types):
        causal_lm = CAUSAL_LM.get(model_type, "")
        ok, line = gguf_support(model_type)
        assert ok == (causal_lm in WRITERS), (model_type, causal_lm, line)
        assert (model_type in MULTIMODAL_TYPES) == causal_lm.endswith("ForConditionalGeneration"), model_type
        if model_type in MULTIMODAL_TYPES:
            assert not ok and "multimodal" in line and MULTIMODAL_TYPES[model_type] == causal_lm
    qwen = Qwen3_5Config(text_config={"num_hidden_layers": 4}, architectures=["Qwen3_5ForConditionalGeneration"])
    assert gguf_support(qwen)[0]
    gemma = Gemma4Config(architectures=["Gemma4ForConditionalGeneration"])
    ok, line = gguf_support(gemma)
    assert not ok and "multimodal" in line


def test_the_pre_tokenizer_is_the_one_llama_cpp_splits_like_the_tokenizer():
    """A plain GPT-2 byte-level tokenizer (the embedded SmolLM2's) is llama.cpp's "gpt-2": its "default" splits a
    space from the punctuation after it (" —" became two tokens; 397 of the 690 sample rows' texts tokenized
    differently in llama.cpp), which the round-trip check above shows (tokens_same). Qwen3.5's tokenizer keeps
    combining marks in words: llama.cpp's "qwen35"."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX as QWEN35

    from lora_tui.core.export.gguf_vocab import pre_tokenizer_name

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert pre_tokenizer_name({"pre_tokenizer": byte_level}, "llama", {}) == "gpt-2"

    def split(regex):
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated"}, {**byte_level, "use_regex": False}]}}

    assert pre_tokenizer_name(split(QWEN35), "qwen3_5_text", {}) == "qwen35"
    assert pre_tokenizer_name(split(QWEN2), "qwen3_5_text", {}) == pre_tokenizer_name(split(QWEN2), "qwen3", {}) == "qwen2"
