"""Portable adapters (issue 11): adapter_config.json names a hub id, plain PEFT loads it elsewhere,
and training.report_to is checked and wired."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.chat import make_fake_run


def _fake_hub_cache(hf_home: Path, repo_id: str, model_dir: Path) -> None:
    """The layout huggingface_hub keeps in HF_HOME/hub, with the model's files linked in."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in model_dir.iterdir():
        if f.is_file():
            (snapshot / f.name).symlink_to(f.resolve())


def test_portable_base_names(tiny_model_dir):
    from lora_tui.core.model.embedded import EMBEDDED_HUB_ID
    from lora_tui.core.model.hub_ids import local_base, portable_base

    assert portable_base("embedded") == (EMBEDDED_HUB_ID, True)
    assert portable_base("Qwen/Qwen2.5-0.5B-Instruct") == ("Qwen/Qwen2.5-0.5B-Instruct", True)
    assert portable_base(str(tiny_model_dir)) == (str(tiny_model_dir.resolve()), False)
    assert local_base("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_embedded_adapter_loads_with_plain_peft_where_the_cache_path_does_not_exist(tmp_path, embedded_model_dir):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_tui.core.config import Config, save_config
    from lora_tui.core.model.embedded import EMBEDDED_HUB_ID
    from lora_tui.core.run.runs import RunDirectory
    from lora_tui.core.train.training import save_adapter

    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    save_config(Config(), run.config_path)  # model.name: the embedded model
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    save_adapter(model, AutoTokenizer.from_pretrained(embedded_model_dir), run)

    saved = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == EMBEDDED_HUB_ID
    assert str(embedded_model_dir) not in (run.adapter_dir / "adapter_config.json").read_text()
    ids = [[1, 20, 300, 4000, 7]]
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(embedded_model_dir),
                                             run.adapter_dir)(torch.tensor(ids)).logits
    torch.save(expected, tmp_path / "expected.pt")

    hf_home = tmp_path / "hf"
    _fake_hub_cache(hf_home, EMBEDDED_HUB_ID, embedded_model_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LORA_TUI"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", LORA_TUI_CACHE=str(tmp_path / "no-such-cache"))
    script = (
        "import sys, torch\n"
        "from peft import AutoPeftModelForCausalLM\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({str(run.adapter_dir)!r})\n"
        f"got = model(torch.tensor({ids})).logits\n"
        f"assert torch.allclose(got, torch.load({str(tmp_path / 'expected.pt')!r}), atol=1e-4), 'logits differ'\n"
        "print('ok', model.peft_config['default'].base_model_name_or_path)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"ok {EMBEDDED_HUB_ID}" in done.stdout
    assert not (tmp_path / "no-such-cache").exists()


def test_bare_embedded_adapter_still_finds_the_offline_copy(tmp_path, tiny_model_dir, monkeypatch):
    from lora_tui.core.run.adapters import find_adapter
    from lora_tui.core.model.embedded import EMBEDDED_MODEL
    from lora_tui.core.model.embedded import EMBEDDED_HUB_ID

    run = Path(make_fake_run(tmp_path, tiny_model_dir))
    bare = tmp_path / "copied-adapter"
    bare.mkdir()
    for f in (run / "adapter").iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    data = json.loads((bare / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = EMBEDDED_HUB_ID
    (bare / "adapter_config.json").write_text(json.dumps(data))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    assert find_adapter(bare).base_model == EMBEDDED_MODEL


@pytest.mark.parametrize("value, expected", [("none", "none"), ("tensorboard", "tensorboard"),
                                             ("tensorboard, wandb", "tensorboard,wandb"), (["mlflow"], "mlflow")])
def test_report_to_values(value, expected):
    from lora_tui.core.config import config_from_dict

    assert config_from_dict({"training": {"report_to": value}}).training.report_to == expected


def test_report_to_refuses_unknown_and_names_missing_extras(monkeypatch):
    from lora_tui.core.config import ConfigError, config_from_dict
    from lora_tui.core.train import tracking

    with pytest.raises(ConfigError, match="comet.*tensorboard, trackio, wandb, mlflow"):
        config_from_dict({"training": {"report_to": "comet"}})
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    assert tracking.missing_trackers("tensorboard") == []  # installed with lora-tui
    [line] = tracking.missing_trackers("tensorboard,wandb")
    assert "wandb is not installed" in line and 'pip install "lora-tui[wandb]"' in line
