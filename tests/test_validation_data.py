"""A validation file belongs to its training data (issue 24 item 1).

Giving another ``data.train`` without ``data.validation`` (overrides, a config file, ``--data``, the
wizard's Dataset and Parameters steps) holds out ``data.val_fraction`` of the new rows instead of
evaluating on the sample's pirate file; the run's output, its ``started`` event, the model card and the
wizard say where the eval rows come from. Giving both keeps both; a run's own config.yaml names both,
so ``--resume`` keeps what the run started with.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from lora_tui.core.config import Config, apply_overrides, config_from_dict, load_config
from tests.conftest import REPO

ALPACA = "sample_data/formats/alpaca.jsonl"
SAMPLE_VALID = "sample_data/valid.jsonl"


def cli(*args: str, cwd=REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_tui", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def printed_data(*args: str) -> dict:
    out = cli("train", *args, "--print-config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["data"]


def test_training_data_alone_holds_out_instead_of_the_samples_validation_file():
    data = printed_data(f"data.train={ALPACA}")
    assert data["train"] == ALPACA
    assert data["validation"] is None, "the sample's valid.jsonl does not belong to other training data"


@pytest.mark.parametrize("words, validation", [
    ((), SAMPLE_VALID),  # the defaults: the sample's own pair
    ((f"data.train={ALPACA}", "data.validation=mine.jsonl"), "mine.jsonl"),
    (("data.validation=mine.jsonl", f"data.train={ALPACA}"), "mine.jsonl"),  # either order
    (("data.train=sample_data/train.jsonl",), SAMPLE_VALID),  # the same training data keeps its file
    (("--data", ALPACA), None),  # the top-level --data is data.train
])
def test_overrides_keep_a_validation_file_only_with_its_data(words, validation):
    if words[:1] == ("--data",):
        out = cli("--data", words[1], "train", "--print-config")
        assert out.returncode == 0, out.stderr
        assert yaml.safe_load(out.stdout)["data"]["validation"] is validation
        return
    assert printed_data(*words)["validation"] == validation


def test_config_files_keep_their_pair_and_drop_the_default(tmp_path):
    alone, both = tmp_path / "alone.yaml", tmp_path / "both.yaml"
    alone.write_text(f"data:\n  train: {ALPACA}\n")
    both.write_text(f"data:\n  train: {ALPACA}\n  validation: mine.jsonl\n")
    assert printed_data(str(alone))["validation"] is None
    assert printed_data(str(both))["validation"] == "mine.jsonl"
    # The file's pair belongs together: other training data on top of it holds out again.
    assert printed_data(str(both), "data.train=sample_data/train.jsonl")["validation"] is None
    # A run's config.yaml names both (null when it held out), so a resume reads back exactly that.
    saved = tmp_path / "run.yaml"
    saved.write_text(f"data:\n  train: {ALPACA}\n  validation: null\n")
    assert load_config(saved).data.validation is None
    assert config_from_dict({"data": {"train": ALPACA, "validation": SAMPLE_VALID}}).data.validation == SAMPLE_VALID


def test_hold_out_is_the_trainers_split_and_tiny_data_keeps_every_row():
    from lora_tui.core.data.load import MIN_ROWS_TO_HOLD_OUT, hold_out, validation_line

    rows = list(range(303))
    train, held = hold_out(rows, 0.05, 42)
    assert len(held) == 15 and len(train) == 288 and hold_out(rows, 0.05, 42) == (train, held), "seeded: a resume splits alike"
    assert hold_out(list(range(4)), 0.05, 42) == ([0, 1, 2, 3], []), "4 rows: all of them train"
    assert hold_out(rows, 0.0, 42) == (rows, [])
    assert validation_line("a.jsonl", None, 0.05, 303, 15) == "15 rows held out of the 303 in a.jsonl (data.val_fraction 5%)"
    assert validation_line("a.jsonl", "v.jsonl", 0.05, 303, 40) == "40 rows from v.jsonl"
    few = validation_line(ALPACA, None, 0.05, 4, 0)
    assert few.startswith("none: 4 rows are too few") and f"{MIN_ROWS_TO_HOLD_OUT} needed" in few and "data.validation" in few


def test_the_trainers_datasets_say_where_eval_rows_come_from(tiny_model_dir, data_files):
    from transformers import AutoTokenizer

    from lora_tui.core.train.training import build_datasets

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train, valid = data_files  # 24 and 6 rows
    config = apply_overrides(Config(), [f"model.name={tiny_model_dir}", f"data.train={train}", "data.max_seq_len=64"])
    assert config.data.validation is None
    train_ds, eval_ds, facts = build_datasets(config, tokenizer)
    assert (len(train_ds), len(eval_ds)) == (23, 1)
    assert facts["validation_line"] == f"1 row held out of the 24 in {train} (data.val_fraction 5%)"
    apply_overrides(config, [f"data.validation={valid}"])
    assert build_datasets(config, tokenizer)[2]["validation_line"] == f"6 rows from {valid}"
    apply_overrides(config, [f"data.train={REPO / ALPACA}"])
    train_ds, eval_ds, facts = build_datasets(config, tokenizer)
    assert (len(train_ds), eval_ds) == (4, None) and facts["validation_line"].startswith("none: 4 rows are too few")


def test_headless_run_on_other_data_evaluates_on_its_own_rows(tiny_model_dir, train_file, tmp_path):
    """The issue's command, on a tiny model: `lora-tui train data.train=FILE training.max_steps=1` from the repo."""
    run_dir = tmp_path / "run"
    out = cli("train", f"model.name={tiny_model_dir}", f"data.train={train_file}", "data.max_seq_len=64",
              "training.max_steps=1", "training.micro_batch=2", "training.grad_accum=1", "--run-dir", str(run_dir),
              timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = f"validation: 1 row held out of the 24 in {train_file} (data.val_fraction 5%)"
    assert line in out.stdout, out.stdout
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["type"] == "started")
    assert started["num_eval_rows"] == 1 and started["num_train_rows"] == 23
    assert started["data"]["validation_line"] == line.removeprefix("validation: ")
    assert load_config(run_dir / "config.yaml").data.validation is None, "a resume holds out the same rows again"
    card = (run_dir / "adapter" / "README.md").read_text()
    assert f"| validation | 1 row held out of the 24 in {train_file}" in card and "valid.jsonl" not in card


def test_wizard_dataset_step_holds_out_of_the_file_typed(monkeypatch, embedded_model_dir, tmp_path):
    """The issue's steps on the Dataset screen: the default sample pair, then another training file."""
    import asyncio

    from lora_tui.core.config import config_to_yaml
    from tests.support.ui import goto, wizard_at
    from tests.support.wait import until

    monkeypatch.chdir(REPO)

    async def go():
        async with wizard_at("dataset", (120, 40)) as pilot:
            app, state = pilot.app, pilot.app.state
            screen = app.screen
            await until(pilot, lambda: state.dataset_current() is not None, timeout=120, what="the sample's check")
            assert SAMPLE_VALID in str(screen.query_one("#data-summary").render())  # the sample's own pair
            screen.query_one("#data-path").focus()
            await pilot.press("end", *["backspace"] * 60, *ALPACA, "enter")
            await until(pilot, lambda: state.dataset_current() is not None, timeout=120, what="the new file's check")
            summary = str(screen.query_one("#data-summary").render())
            assert "Validation: none: 4 rows are too few to hold out 5%" in summary and "valid.jsonl" not in summary
            assert state.config.data.validation is None
            assert "validation: null" in config_to_yaml(state.config)  # what ctrl+s saves
            # The Parameters step shows the same, and data.train typed there drops a validation file too.
            await goto(pilot, "parameters")
            params = app.screen
            assert params.query_one("#field-data-validation Input").value == ""
            state.config.data.validation = SAMPLE_VALID
            params.sync_from_state()
            params.query_one("#field-data-train Input").focus()
            await pilot.press("end", *["backspace"] * 60, *"sample_data/formats/messages.jsonl")
            await until(pilot, lambda: state.config.data.train.endswith("messages.jsonl"), what="the typed file")
            assert state.config.data.validation is None
            assert params.query_one("#field-data-validation Input").value == ""

    asyncio.run(go())
