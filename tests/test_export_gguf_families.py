"""GGUF export of every family the writer knows (issue 23 item 4), each loaded back in llama.cpp itself.

One tiny random model per family (the family matrix's, lora_tui/core/model/tiny.py: hidden 64, 2 layers, the
family's chat template and end-of-turn token), its weights redrawn larger (std 0.2) and its norms and biases off
their neutral values, so that attention is far from uniform and a lost norm offset, a wrong rope layout,
sliding window, soft-cap or expert order moves llama.cpp's next-token choices (at transformers' default std 0.02
a llama file without llama.cpp's rope layout still picked the same next token everywhere); with a small LoRA
adapter on every linear layer. For each family the run is
exported as f16, q8_0 and q4_k_m with ``export_gguf`` (the CLI's path) and llama.cpp scores one conversation
against the merged model in transformers: f16 must choose the merged model's next token almost everywhere, the
quantised files must stay finite and near it. The product's full round-trip check (``verify_export``) runs on
the f16 file of three families that each need a different mapping (norm offset and sliding windows, stacked
experts, fused projections); benchmarks/gguf_families.py runs it on every family and type.
Families llama.cpp loads but the export does not write are refused in one line before any loading.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from lora_tui.core.model.tiny import TINY_FAMILIES

ROOT = Path(__file__).resolve().parents[1]
HAS_LLAMACPP = importlib.util.find_spec("xllamacpp") is not None and importlib.util.find_spec("libgguf") is not None
NOT_WRITTEN = {"qwen3_5": "Qwen3.5 (hybrid linear attention)", "gemma4": "Gemma 4"}
WRITTEN = [f for f in TINY_FAMILIES if f not in NOT_WRITTEN] + ["phi4_mini"]
CHECKED = ("gemma3", "qwen3_moe", "phi3")
# f16 in llama.cpp against float32 PyTorch: the same next token almost everywhere (a layout bug gives < 60 %)
F16_SAME_TOP = 0.95
# gpt-oss: llama.cpp rounds YaRN's correction range outward, transformers does not for gpt-oss (truncate: false);
# the same tiny model with truncate: true scores mean |Δ log p| 0.002 (measured), with false 0.038.
F16_DELTA = {"gpt_oss": 0.05}


# Where the matrix's tiny config differs from every published model of the family in a way llama.cpp hard-codes
# (and gguf_support refuses): Qwen3-30B-A3B renormalises its top-k expert weights; SmolLM3-3B skips rope every
# 4th layer (4 layers, so one of them does).
PUBLISHED = {"qwen3_moe": {"norm_topk_prob": True},
             "smollm3": {"num_hidden_layers": 4, "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0],
                         "layer_types": ["full_attention"] * 4}}
# Phi-4-mini: the matrix's Phi-3 classes with Phi-4-mini's rope (LongRoPE from 4096 to 131072 positions, 3/4 of
# each head rotated) and tied embeddings; its factors drawn at random so that a lost one shows
VARIANTS = {"phi4_mini": ("phi3", {
    "tie_word_embeddings": True, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                        "original_max_position_embeddings": 4096,
                        "short_factor": [1.0, 1.3, 2.1, 0.8, 1.7, 3.0], "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]}})}


def sensitive_tiny(family: str, out: Path, tokenizer_dir: Path) -> Path:
    """The matrix's tiny model of ``family`` (its config and tokenizer, lora_tui/core/model/tiny.py) with the
    published values above, weights drawn with std 0.2 and every vector moved off its neutral value (norms 1 or
    Gemma's 0, biases 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lora_tui.core.model.tiny import family_tokenizer, tiny_config

    family, published = VARIANTS.get(family, (family, PUBLISHED.get(family, {})))
    tokenizer = family_tokenizer(family, tokenizer_dir)
    config = tiny_config(family, tokenizer)
    for key, value in published.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(param + noise * 0.1 if param.dim() == 1 else noise * 0.2)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_run(root: Path, family: str, tokenizer_dir: Path) -> Path:
    """A finished fake run on ``family``'s tiny model with a small LoRA adapter on all linear layers."""
    from peft import LoraConfig

    base = sensitive_tiny(family, root / "base-model", tokenizer_dir)
    return add_run(root, base, "tiny-run", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                      task_type="CAUSAL_LM"), scale=0.05, seed=1)


def add_run(root: Path, base: Path, name: str, lora, *, scale: float, seed: int) -> Path:
    """A finished fake run named ``name`` on ``base`` whose adapter (``lora``: a peft LoraConfig) has random B."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_tui.core.config import load_config, save_config
    from tests.support.chat import make_fake_run

    run = Path(make_fake_run(root, base, name=name, with_adapter=False))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "adapter")
    config = load_config(run / "config.yaml")
    config.data.train, config.data.validation = str(ROOT / "sample_data/train.jsonl"), str(ROOT / "sample_data/valid.jsonl")
    save_config(config, run / "config.yaml")
    return run


CONVERSATION = [{"role": "user", "content": "Why is the sky blue? Then count 1 2 3 and name three colours."},
                {"role": "assistant", "content": "Sunlight scatters off the air, blue most: 1, 2, 3; red, green, blue."}]


def merged_reference(run: Path):
    """(merged model, tokenizer, token ids of one conversation, the merged model's log-probs at each position)."""
    import torch

    from lora_tui.core.export.artefacts import load_merged
    from lora_tui.core.run.adapters import find_adapter

    model, tokenizer, _ = load_merged(find_adapter(run, allow_checkpoint=False), "float32")
    ids = tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model.eval()(torch.tensor([ids])).logits[0].float(), -1)
    return model, tokenizer, ids, logp


def llamacpp_against(reference, gguf_path: Path, lora: Path | None = None) -> tuple[float, float]:
    """(share of positions where llama.cpp and the merged model pick the same next token, mean |Δ log p|)
    over the reference conversation, fed as the same token ids to both; ``lora``: a LoRA GGUF llama.cpp applies."""
    from lora_tui.core.export.llamacpp import LlamaCppModel

    _, _, ids, logp = reference
    positions = list(range(1, len(ids)))
    cpp = LlamaCppModel(gguf_path, n_ctx=512, lora=lora)
    try:
        got, tops = cpp.score(ids, positions)[:2]
    finally:
        cpp.close()
    pairs = [(float(logp[t - 1, ids[t]]), g, int(logp[t - 1].argmax()) == top)
             for t, g, top in zip(positions, got, tops) if not math.isnan(g)]
    assert len(pairs) > 0.9 * len(positions)
    return sum(same for *_, same in pairs) / len(pairs), sum(abs(a - b) for a, b, _ in pairs) / len(pairs)


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory, tokenizer_dir):
    runs: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in runs:
            runs[family] = make_run(tmp_path_factory.mktemp(f"gguf-{family}"), family, tokenizer_dir)
        return runs[family]

    return get


@pytest.mark.skipif(not HAS_LLAMACPP, reason='needs llama.cpp and K-quants: pip install "lora-tui[llamacpp,gguf-kquant]"')
@pytest.mark.parametrize("family", WRITTEN)
def test_family_gguf_answers_like_the_merged_model_in_llama_cpp(family, family_runs, tmp_path):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.check import learned_end_token
    from lora_tui.core.export.gguf import read_gguf_facts, write_gguf

    run = family_runs(family)
    reference = merged_reference(run)
    model, tokenizer, _, _ = reference
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    figures = {}
    for gguf_type in ("f16", "q8_0", "q4_k_m"):
        if gguf_type == "f16":  # the CLI's path once; the other types from the same merged model, as it writes them
            path = export_gguf(run, gguf_type=gguf_type)
        else:
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
    # 8 and ~5 bits per weight (64-wide rows take Q5_0 / Q5_1 / Q8_0, as llama.cpp's fallbacks) move a random model
    # with std 0.2 weights far more than a trained one (measured: q8_0 80-100 %, q4_k_m 27-96 % same next token),
    # but not to another model (the llama file with a wrong rope layout: 7 %)
    assert figures["q8_0"][0] >= 0.75 and figures["q4_k_m"][0] >= 0.2, figures


@pytest.mark.skipif(not HAS_LLAMACPP, reason='needs llama.cpp: pip install "lora-tui[llamacpp]"')
@pytest.mark.parametrize("family", CHECKED)
def test_round_trip_check_passes_in_llama_cpp(family, family_runs):
    from lora_tui.core.export.artefacts import export_gguf
    from lora_tui.core.export.check import verify_export

    run = family_runs(family)
    path = export_gguf(run, gguf_type="f16", overwrite=True)
    result = verify_export(run, path.parent, gguf_file=path.name, n_prompts=1, n_rows=3, max_new_tokens=8)
    assert result.runtime.startswith("llama.cpp") and result.ok, result.table()
    assert result.template_same and result.tokens_same and result.eos_ok, result.table()


def test_a_layout_bug_is_what_the_llama_cpp_comparison_catches(tmp_path, family_runs, monkeypatch):
    """The comparison above is not blind: the same Llama 3 model written without llama.cpp's rope layout
    (q/k rows not permuted) picks other next tokens."""
    import dataclasses

    if not HAS_LLAMACPP:
        pytest.skip("needs llama.cpp")
    from lora_tui.core.export import gguf_families
    from lora_tui.core.export.artefacts import export_gguf

    run = family_runs("llama")
    wrong = dataclasses.replace(gguf_families.FAMILIES["LlamaForCausalLM"], rope="neox")
    monkeypatch.setitem(gguf_families.FAMILIES, "LlamaForCausalLM", wrong)
    same, _ = llamacpp_against(merged_reference(run), export_gguf(run, tmp_path / "wrong.gguf", gguf_type="f16"))
    assert same < 0.6


@pytest.mark.parametrize("family", sorted(NOT_WRITTEN))
def test_a_family_not_written_is_refused_in_one_line_before_loading(family, tmp_path, tokenizer_dir, monkeypatch, capsys):
    from lora_tui.cli import main
    from lora_tui.core.export import artefacts
    from lora_tui.core.export.gguf import gguf_support

    run = make_run(tmp_path, family, tokenizer_dir)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(artefacts, "load_merged", no_loading)
    capsys.readouterr()  # building the tiny model printed progress bars
    assert main(["export", str(run), "--gguf", "--gguf-type", "f16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    words = NOT_WRITTEN[family]
    assert len(err) == 1 and words in err[0] and "merged model" in err[0] and "Traceback" not in err[0]
    supported, line = gguf_support(_config(tmp_path / "base-model"))
    assert not supported and words in line and "\n" not in line


def _config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def test_gguf_support_answers_for_configs_names_and_refusals():
    from transformers import GPT2Config, Gemma2Config, MinistralConfig

    from lora_tui.core.export.gguf import gguf_support

    assert gguf_support("qwen3") == (True, "GGUF export writes Qwen3 as llama.cpp's 'qwen3' architecture.")
    assert gguf_support("Gemma3ForCausalLM")[0] and gguf_support("gpt_oss")[0]
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
