"""The offline model catalogue and model_dims' other sources (embedded, local
directory, Hugging Face cache), read without loading any weights."""

from __future__ import annotations

import json

import pytest

from lora_tui.core.model.catalogue import CATALOGUE, ModelDims, model_dims

REQUIRED = ["Llama-2-7B", "Llama-3.1-8B", "Llama-3.2-1B", "Llama-3.2-3B", "Mistral-7B", "Qwen2.5-0.5B",
            "Qwen2.5-1.5B", "Qwen2.5-7B", "SmolLM2-135M", "SmolLM2-360M", "SmolLM2-1.7B", "Phi-3-mini", "Gemma-2-2B"]
# Issue 23 item 6: the models people fine-tune in 2026 (each with the config and count found with search: "source")
REQUIRED_2026 = ["Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3.5-9B", "Gemma-3-1B", "Gemma-3-4B", "Gemma-3-12B",
                 "SmolLM3-3B", "Phi-4-mini", "Ministral-3-3B", "OLMo-2-7B", "Granite-3.3-8B",
                 "Qwen3-30B-A3B", "gpt-oss-20b"]


def test_catalogue_has_the_popular_models():
    assert set(REQUIRED) <= set(CATALOGUE)
    assert all(isinstance(d, ModelDims) for d in CATALOGUE.values())


def test_the_2026_models_say_where_their_facts_come_from():
    from lora_tui.core.model.catalogue import _raw_catalogue

    assert set(REQUIRED_2026) <= set(CATALOGUE)
    unsourced = [name for name, entry in _raw_catalogue().items() if not entry.get("source")]
    assert not unsourced, f"catalogue entries without a source: {unsourced}"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_computed_parameter_count_matches_the_published_one(name):
    dims = CATALOGUE[name]
    assert dims.published_params, f"{name} needs its published parameter count"
    assert dims.params == pytest.approx(dims.published_params, rel=0.02)


@pytest.mark.parametrize("name", ["Qwen2.5-0.5B", "Phi-3-mini", "Gemma-2-2B", "Llama-3.2-1B", "Gemma-3-4B", "Ministral-3-3B"])
def test_dimensions_build_the_same_model_in_transformers(name):
    """Cross-check against transformers' own modules, built on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_tui.core.model.catalogue import _raw_catalogue

    cfg = dict(_raw_catalogue()[name]["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    dims = CATALOGUE[name]
    assert sum(p.numel() for p in model.parameters()) == dims.params
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    assert linear == set(dims.linear_modules)


@pytest.mark.parametrize("name", ["Qwen3.5-9B", "gpt-oss-20b", "Qwen3-30B-A3B"])
def test_hybrid_and_moe_counts_equal_the_model_transformers_builds(name):
    """Linear-attention layers and fused experts (not nn.Linear): the count alone, on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lora_tui.core.model.catalogue import _raw_catalogue

    cfg = dict(_raw_catalogue()[name]["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == CATALOGUE[name].params


def test_published_facts_that_are_easy_to_get_wrong():
    assert CATALOGUE["Qwen2.5-0.5B"].tied_embeddings and CATALOGUE["Qwen2.5-1.5B"].tied_embeddings
    assert not CATALOGUE["Qwen2.5-7B"].tied_embeddings and CATALOGUE["Qwen2.5-7B"].vocab == 152064
    assert CATALOGUE["Gemma-2-2B"].vocab == 256000 and CATALOGUE["Gemma-2-2B"].head_dim == 256
    assert CATALOGUE["Phi-3-mini"].target_modules("all-linear") == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert CATALOGUE["Phi-3-mini"].target_modules("qv") == ["qkv_proj"]
    assert CATALOGUE["Llama-3.1-8B"].kv_heads == 8 and CATALOGUE["Llama-3.1-8B"].vocab == 128256
    assert CATALOGUE["Qwen3-4B"].tied_embeddings and not CATALOGUE["Qwen3-8B"].tied_embeddings
    # Multimodal models are listed by their text model: below the published totals, which add the vision tower
    assert CATALOGUE["Gemma-3-4B"].params < 4.3e9 - 0.4e9 and CATALOGUE["Gemma-3-12B"].params < 12.2e9 - 0.4e9
    assert CATALOGUE["Gemma-3-4B"].vocab == 262208 and CATALOGUE["Gemma-3-1B"].vocab == 262144
    assert CATALOGUE["Qwen3.5-9B"].linear_attention_layers == 24 and not CATALOGUE["Qwen3.5-9B"].tied_embeddings
    assert CATALOGUE["gpt-oss-20b"].experts == 32 and CATALOGUE["gpt-oss-20b"].experts_per_token == 4
    assert CATALOGUE["Qwen3-30B-A3B"].experts == 128 and CATALOGUE["Qwen3-30B-A3B"].intermediate == 768


def test_names_hub_ids_and_aliases():
    assert model_dims("Qwen/Qwen2.5-7B-Instruct") is CATALOGUE["Qwen2.5-7B"]
    assert model_dims("meta-llama/Llama-3.2-1B-Instruct") is CATALOGUE["Llama-3.2-1B"]
    assert model_dims("smollm2-360m") is CATALOGUE["SmolLM2-360M"]


def test_embedded_model(embedded_model_dir):
    dims = model_dims("embedded")
    assert (dims.hidden, dims.layers, dims.vocab) == (576, 30, 49152)
    assert dims.params == CATALOGUE["SmolLM2-135M"].params
    assert dims.stored_dtype == "float32" and dims.checkpoint_bytes > 500e6


def test_local_model_directory(tiny_model_dir):
    dims = model_dims(str(tiny_model_dir))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert (dims.hidden, dims.layers, dims.heads, dims.kv_heads, dims.intermediate, dims.vocab) == (
        cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
        cfg["intermediate_size"], cfg["vocab_size"])
    assert dims.tied_embeddings == cfg["tie_word_embeddings"]
    import math

    from safetensors import safe_open

    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert dims.params == stored  # tied lm_head is not stored twice


def test_cached_hub_config(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--someone--tiny-chat" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 3,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "intermediate_size": 128, "vocab_size": 1000}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    dims = model_dims("someone/tiny-chat")
    assert (dims.hidden, dims.layers, dims.kv_heads, dims.intermediate) == (64, 3, 2, 128)
    assert dims.attention_bias and not dims.tied_embeddings


def test_unknown_and_broken_inputs_are_clear(tmp_path):
    with pytest.raises(LookupError, match="Unknown model 'nobody/nothing'"):
        model_dims("nobody/nothing")
    with pytest.raises(ValueError, match="no config.json"):
        model_dims(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hidden_size": 8,\n "num_hidden_layers": }')
    with pytest.raises(ValueError, match=r"config.json: line 2: not valid JSON"):
        model_dims(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match="num_hidden_layers"):
        model_dims(str(tmp_path))
