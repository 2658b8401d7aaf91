"""LoRA adapters as GGUF (issue 26 item 3): the adapter alone as llama.cpp reads a LoRA GGUF, the base model's
GGUF written once and shared by every adapter of that base, an Ollama Modelfile with FROM + ADAPTER, and
llama.cpp itself applying the adapter on the base answering like the merged model."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.support.gguf_runs import add_run, attention_mlp_run, llamacpp_against, merged_reference

HAS_LLAMACPP = importlib.util.find_spec("xllamacpp") is not None
needs_llamacpp = pytest.mark.skipif(not HAS_LLAMACPP, reason='needs llama.cpp: pip install "lora-tui[llamacpp]"')


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The user cache the base GGUF goes to, here a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("LORA_TUI_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def llama_run(gguf_run, cache):
    return gguf_run("llama")  # the session's tiny Llama run (tests/conftest.py), shared with the family GGUF tests


def test_adapter_gguf_is_what_llama_cpp_reads_as_a_lora(llama_run, cache):
    import gguf
    from safetensors.numpy import load_file

    from lora_tui.core.export.gguf_adapter import write_adapter_gguf

    info = write_adapter_gguf(llama_run)
    assert info.path == llama_run / "gguf" / "tiny-run-lora.gguf" and not info.base_reused
    assert info.base_path.is_file() and cache in info.base_path.parents
    reader = gguf.GGUFReader(str(info.path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    tensors = {t.name: t for t in reader.tensors}
    peft = load_file(str(llama_run / "adapter" / "adapter_model.safetensors"))
    a = peft["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]  # (rank, in): written as it is
    assert tensors["blk.1.ffn_down.weight.lora_a"].data.shape == a.shape == (4, 128)
    assert tensors["blk.1.ffn_down.weight.lora_b"].data.shape == (64, 4)
    assert len(tensors) == 2 * 7 * 2  # A and B of 7 linear layers in 2 blocks
    modelfile = info.modelfile.read_text()
    assert f"FROM {info.base_path}\nADAPTER ./tiny-run-lora.gguf\n" in modelfile and "<|eot_id|>" in modelfile


@needs_llamacpp
def test_base_plus_adapter_in_llama_cpp_answers_like_the_merged_model(llama_run):
    from lora_tui.core.export.check import verify_export
    from lora_tui.core.export.gguf_adapter import write_adapter_gguf

    info = write_adapter_gguf(llama_run, overwrite=True)
    reference = merged_reference(llama_run)
    with_adapter, delta = llamacpp_against(reference, info.base_path, lora=info.path)
    base_alone, _ = llamacpp_against(reference, info.base_path)
    print(f"\nbase + LoRA GGUF: same next token {with_adapter:.0%}, mean |Δ log p| {delta:.4f}; base alone {base_alone:.0%}")
    assert with_adapter >= 0.95 and delta < 0.02 and base_alone < 0.8  # the adapter is what makes the difference
    result = verify_export(llama_run, info.base_path.parent, gguf_file=info.base_path.name, lora=info.path,
                           n_prompts=1, n_rows=3, max_new_tokens=8)
    assert result.runtime.startswith("llama.cpp") and result.ok and result.template_same and result.eos_ok, result.table()


@needs_llamacpp
def test_adapters_of_one_base_share_one_base_file_and_rslora_scaling_survives(tmp_path, llama_run, cache):
    """A second adapter of the same base (rsLoRA, rank 8: another scaling llama.cpp must be given) reuses the
    base file; llama.cpp applies each adapter on it as the merged model computes."""
    import json

    from peft import LoraConfig

    from lora_tui.core.config import load_config
    from lora_tui.core.export.gguf_adapter import write_adapter_gguf

    first = write_adapter_gguf(llama_run, overwrite=True)
    base = Path(load_config(llama_run / "config.yaml").model.name)
    run = add_run(tmp_path, base, "second", LoraConfig(r=8, lora_alpha=4, use_rslora=True, task_type="CAUSAL_LM",
                                                       target_modules=["q_proj", "k_proj", "v_proj"]), scale=0.1, seed=2)
    second = write_adapter_gguf(run)
    assert second.base_reused and second.base_path == first.base_path
    assert len(list(cache.rglob("*.gguf"))) == 1
    assert json.loads((run / "exports.json").read_text())["gguf_adapter"][0]["reused_base"] is True
    same, delta = llamacpp_against(merged_reference(run), second.base_path, lora=second.path)
    assert same >= 0.95 and delta < 0.02, (same, delta)


def test_adapters_llama_cpp_cannot_apply_are_refused_in_one_line_before_loading(tmp_path, llama_run, monkeypatch, capsys):
    import json
    import shutil

    from lora_tui.cli import main
    from lora_tui.core.export import gguf_adapter

    run = tmp_path / "dora"
    shutil.copytree(llama_run, run, ignore=shutil.ignore_patterns("gguf", "exports.json"))
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded before the refusal")

    monkeypatch.setattr(gguf_adapter, "_write_base", no_loading)
    monkeypatch.setattr(gguf_adapter, "_training_tokenizer", no_loading)
    assert main(["export", str(run), "--gguf-adapter", "--no-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DoRA" in err[0] and "--gguf" in err[0] and "Traceback" not in err[0]
    assert not (run / "gguf").exists()


@needs_llamacpp
def test_qwen3_5_lora_gguf_takes_the_value_head_order_of_its_base(gguf_run, cache):
    """Qwen3.5's base file regroups the linear attention's value heads (gguf_hybrid): the adapter's B rows (and
    out_proj's A columns) follow, or llama.cpp adds each head's update to another head."""
    from lora_tui.core.export.gguf_adapter import write_adapter_gguf

    run = gguf_run("qwen3_5")
    info = write_adapter_gguf(run, overwrite=True)
    same, delta = llamacpp_against(merged_reference(run), info.base_path, lora=info.path)
    print(f"\nQwen3.5 base + LoRA GGUF: same next token {same:.0%}, mean |Δ log p| {delta:.4f}")
    assert same >= 0.95 and delta < 0.02, (same, delta)


@needs_llamacpp
def test_a_gemma4_adapter_on_attention_and_mlp_is_applied_by_llama_cpp(gguf_run, cache, tmp_path):
    """The Gemma 4 adapter llama.cpp can apply whole (attention and MLP, not the per-layer projection): base +
    LoRA GGUF answers like the merged model, on the shared base file."""
    from lora_tui.core.export.gguf_adapter import write_adapter_gguf

    run = attention_mlp_run(tmp_path, gguf_run("gemma4"))
    info = write_adapter_gguf(run)
    same, delta = llamacpp_against(merged_reference(run), info.base_path, lora=info.path)
    alone, _ = llamacpp_against(merged_reference(run), info.base_path)
    print(f"\nGemma 4 base + LoRA GGUF: same next token {same:.0%}, mean |Δ log p| {delta:.4f}; base alone {alone:.0%}")
    assert same >= 0.95 and delta < 0.02 and alone < same, (same, delta, alone)


def test_a_gemma4_adapter_on_its_per_layer_projection_is_refused_before_loading(gguf_run, monkeypatch, capsys):
    """llama.cpp's gemma4 multiplies per_layer_model_projection without LoRA (measured: an adapter on it alone
    moved llama.cpp's answers 0.05 nats a token from the merged model's, 96 % same next token), and all-linear
    adapts it: one line, before the base model is loaded, naming the layer and what works instead."""
    from lora_tui.cli import main
    from lora_tui.core.export import gguf_adapter

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded before the refusal")

    monkeypatch.setattr(gguf_adapter, "_write_base", no_loading)
    monkeypatch.setattr(gguf_adapter, "_training_tokenizer", no_loading)
    run = gguf_run("gemma4")
    capsys.readouterr()
    assert main(["export", str(run), "--gguf-adapter", "--no-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "per_layer_model_projection" in err[0] and "--gguf" in err[0], err



def test_the_shared_base_file_name_is_safe_for_every_system_and_ollama():
    """The embedded model's id 'embedded:SmolLM2-...' put a colon in the shared base GGUF's folder and file name
    (invalid on Windows, and read as a name:tag by an Ollama FROM line); ids with slashes or spaces likewise."""
    from types import SimpleNamespace

    from lora_tui.core.export.gguf_adapter import base_gguf_path

    for base in ("embedded:SmolLM2-135M-Instruct", "Qwen/Qwen3-0.6B", "/models/my model:v2/"):
        path = base_gguf_path(SimpleNamespace(base_model=base, revision=None), "/nonexistent", "f16", None, None)
        for part in (path.parent.name, path.name):
            assert re.fullmatch(r"[A-Za-z0-9._-]+", part), part
