"""zip_adapter, merge_adapter and export_summary on fake runs with a tiny model."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from tests.support.chat import make_fake_run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("export-runs")


@pytest.fixture(scope="module")
def fake_run(runs_root, tiny_model_dir):
    return make_fake_run(runs_root, tiny_model_dir)


@pytest.fixture(scope="module")
def merged(fake_run, runs_root):
    from lora_tui.core.export.artefacts import merge_adapter

    return merge_adapter(fake_run, runs_root / "merged")


def logits(model, ids=(1, 20, 300, 4000, 7)):
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits


def test_zip_holds_the_adapter_and_is_not_overwritten_without_the_flag(fake_run, tmp_path):
    from lora_tui.core.export.artefacts import ExportError, zip_adapter

    path = zip_adapter(fake_run)
    assert path == fake_run / f"{fake_run.name}-adapter.zip"
    names = zipfile.ZipFile(path).namelist()
    for required in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"):
        assert f"{fake_run.name}-adapter/{required}" in names
    stamp = path.stat().st_mtime_ns
    with pytest.raises(ExportError, match="already exists"):
        zip_adapter(fake_run)
    assert path.stat().st_mtime_ns == stamp
    assert zip_adapter(fake_run, overwrite=True) == path
    elsewhere = zip_adapter(fake_run, tmp_path)  # a folder: the default name inside it
    assert elsewhere == tmp_path / path.name and zipfile.ZipFile(elsewhere).testzip() is None


def test_unzipped_adapter_loads_with_plain_peft(fake_run, tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_tui.core.export.artefacts import zip_adapter

    zipfile.ZipFile(zip_adapter(fake_run, tmp_path / "a.zip")).extractall(tmp_path / "x")
    unzipped = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                         tmp_path / "x" / f"{fake_run.name}-adapter")
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), fake_run / "adapter")
    assert torch.equal(logits(unzipped), logits(original))


def test_merged_model_loads_with_plain_transformers_and_matches_the_adapter(merged, fake_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(merged)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), fake_run / "adapter")
    assert torch.allclose(logits(plain), logits(with_adapter), atol=1e-4)
    assert not torch.allclose(logits(plain), logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir)), atol=1e-2)
    assert not any("lora" in name for name, _ in plain.named_parameters())
    assert AutoTokenizer.from_pretrained(merged).chat_template  # the template used in training travels along
    assert (merged / "model.safetensors").is_file() and not list(merged.glob("*.bin"))


def test_merged_folder_has_a_modelfile_and_gguf_note(merged):
    modelfile = (merged / "Modelfile").read_text()
    assert [line for line in modelfile.splitlines() if line.startswith("FROM")] == ["FROM ."] and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>assistant\n" in modelfile
    assert "convert_hf_to_gguf.py" in (merged / "README.md").read_text()


def test_merge_refuses_to_overwrite_without_the_flag(merged, fake_run):
    from lora_tui.core.export.artefacts import ExportError, merge_adapter

    stamp = (merged / "config.json").stat().st_mtime_ns
    with pytest.raises(ExportError, match="not empty"):
        merge_adapter(fake_run, merged)
    assert (merged / "config.json").stat().st_mtime_ns == stamp
    marker = merged / "keep-me.txt"  # a file the merge did not write: the folder is no longer replaced (issue 16)
    marker.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="keep-me.txt"):
            merge_adapter(fake_run, merged, overwrite=overwrite)
    assert marker.read_text() == "mine"
    marker.unlink()
    assert merge_adapter(fake_run, merged, overwrite=True) == merged
    assert (merged / "config.json").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("where", ["run", "adapter", "base"])
def test_merge_never_writes_over_the_run_or_the_base_model(fake_run, tiny_model_dir, where):
    from lora_tui.core.export.artefacts import ExportError, merge_adapter

    out = {"run": fake_run, "adapter": fake_run / "adapter", "base": tiny_model_dir}[where]
    with pytest.raises(ExportError, match="must not be touched"):
        merge_adapter(fake_run, out, overwrite=True)
    assert (fake_run / "adapter" / "adapter_model.safetensors").is_file()
    assert (tiny_model_dir / "model.safetensors").is_file()


def test_merge_of_a_four_bit_run_uses_a_full_precision_base(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_tui.core.export.artefacts import merge_adapter

    run = make_fake_run(tmp_path, tiny_model_dir, name="qlora-run", load_in="4bit")
    out = merge_adapter(run, tmp_path / "merged-qlora", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert "quantization_config" not in plain.config.to_dict()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    assert torch.allclose(logits(plain), logits(reference), atol=1e-4)


def test_merge_dtype(tmp_path, fake_run):
    import torch
    from transformers import AutoModelForCausalLM

    from lora_tui.core.export.artefacts import ExportError, merge_adapter

    out = merge_adapter(fake_run, tmp_path / "bf16", dtype="bfloat16")
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16
    with pytest.raises(ExportError, match="dtype"):
        merge_adapter(fake_run, tmp_path / "x", dtype="int3")


def test_alpaca_run_merges_with_an_alpaca_template(tmp_path, tiny_model_dir):
    import yaml
    from transformers import AutoTokenizer

    from lora_tui.core.data import ChatFormatter
    from lora_tui.core.export.artefacts import merge_adapter

    run = make_fake_run(tmp_path, tiny_model_dir, name="alpaca-run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["template"] = "alpaca"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    out = merge_adapter(run, tmp_path / "merged-alpaca")
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Add 2 and 2"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        ChatFormatter(tokenizer, "alpaca").prompt_text(messages)
    assert 'PARAMETER stop "### Instruction:"' in (out / "Modelfile").read_text()


def test_run_without_adapter(tmp_path, tiny_model_dir):
    from lora_tui.core.run.adapters import AdapterError
    from lora_tui.core.export.artefacts import export_summary, merge_adapter, zip_adapter

    run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False)
    with pytest.raises(AdapterError, match="no adapter yet"):
        zip_adapter(run)
    with pytest.raises(AdapterError, match="no adapter yet"):
        merge_adapter(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    summary = export_summary(run)
    assert summary["adapter"] is None and summary["state"] == "finished"


def test_summary_lists_adapter_card_zip_and_merges(fake_run, merged):
    from lora_tui.core.export.artefacts import export_summary, zip_adapter

    zip_adapter(fake_run, overwrite=True)
    summary = export_summary(fake_run)
    assert summary["adapter"] == str(fake_run / "adapter")
    assert "adapter_model.safetensors" in summary["adapter_files"] and summary["adapter_bytes"] > 0
    assert summary["zip"] == str(fake_run / f"{fake_run.name}-adapter.zip") and summary["zip_bytes"] > 0
    paths = [m["path"] for m in summary["merged"]]
    assert str(merged) in paths and len(paths) == len(set(paths))  # re-merging the same folder is listed once
    shutil.rmtree(merged)
    assert str(merged) not in [m["path"] for m in export_summary(fake_run)["merged"]]  # deleted merges drop out
