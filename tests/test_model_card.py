"""The adapter's README.md model card, from config.yaml + events.jsonl."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from tests.support.chat import make_fake_run


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def card(tmp_path_factory, tiny_model_dir):
    from lora_tui.core.run.model_card import write_model_card

    run = make_fake_run(tmp_path_factory.mktemp("card"), tiny_model_dir)
    path = write_model_card(run)
    assert path == run / "adapter" / "README.md"
    return run, path.read_text()


def test_front_matter(card):
    meta = front_matter(card[1])
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "base_model" not in meta  # a local directory is no hub id


def test_every_required_fact_is_recorded(card):
    run, text = card
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", text, re.M))
    assert rows["Base model"] == f"`{adapter['base_model_name_or_path']}`"
    assert rows["Method"] == "LoRA"
    assert rows["Rank (r)"] == str(adapter["r"]) and rows["Alpha"] == str(adapter["lora_alpha"])
    assert rows["Dropout"] == f"{adapter['lora_dropout']:g}"
    assert rows["Target modules"] == ", ".join(sorted(adapter["target_modules"]))
    assert rows["Steps"] == "12 of 12" and "3 done" in rows["Epochs"]
    assert rows["Learning rate"].startswith("0.0001")
    assert "`data/train.jsonl` | 40 | `" + "ab" * 32 + "`" in text
    assert "`data/valid.jsonl` | 8 | `" + "cd" * 32 + "`" in text
    assert "| Before training | 3.25 | 25.79 |" in text and "| After training | 1.75 | 5.75 |" in text
    assert "Final train loss: 1.625." in text
    assert f"lora-tui train {run / 'config.yaml'} training.max_steps=12" in text
    assert "license" in text.lower()


def test_usage_snippet_runs_with_plain_peft(card):
    code = re.search(r"```python\n(.*?)```", card[1], re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # the card's own instructions must work as written
    assert type(namespace["model"]).__name__.startswith("Peft")
    assert namespace["tokenizer"].chat_template


def test_embedded_model_card_names_the_hub_model_and_license(tmp_path):
    from lora_tui.core.config import Config, save_config
    from lora_tui.core.run.model_card import render_model_card
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(tmp_path / "embedded-run")
    run.path.mkdir()
    config = Config()
    config.model.load_in = "4bit"
    save_config(config, run.config_path)
    text = render_model_card(run)
    meta = front_matter(text)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert "qlora" in meta["tags"] and "4-bit NF4 + double quantisation" in text
    assert text.count("not recorded") >= 3  # no events yet: said plainly, not invented


def test_data_hash_is_computed_when_not_recorded(tmp_path, tiny_model_dir):
    from lora_tui.core.config import load_config, save_config
    from lora_tui.core.run.model_card import render_model_card

    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False, events=False)
    config = load_config(run / "config.yaml")
    config.data.train = str(data)
    save_config(config, run / "config.yaml")
    assert hashlib.sha256(data.read_bytes()).hexdigest() in render_model_card(run)


def test_stopped_run(tmp_path, tiny_model_dir):
    from lora_tui.core.run.model_card import render_model_card
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(make_fake_run(tmp_path, tiny_model_dir, with_adapter=False, events=False))
    run.append_event("started", max_steps=100, method="LoRA")
    run.append_event("step", step=7, max_steps=100, epoch=0.2, loss=2.5)
    run.append_event("stopped", step=7, reason="stop requested", adapter=str(run.adapter_dir))
    text = render_model_card(run)
    assert "stopped at step 7 (stop requested)" in text and "| Steps | 7 of 100 |" in text
    assert "Final train loss: 2.5." in text


def test_no_adapter_folder_is_refused(tmp_path, tiny_model_dir):
    from lora_tui.core.run.model_card import write_model_card
    from lora_tui.core.run.runs import RunError

    run = make_fake_run(tmp_path, tiny_model_dir, with_adapter=False)
    with pytest.raises(RunError, match="after the adapter is saved"):
        write_model_card(run)
