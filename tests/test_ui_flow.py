"""The wizard, driven by the keyboard through Textual's Pilot at 80x24, end to end on
a tiny random model: model -> hardware -> dataset -> parameters -> a real (two-step)
training run in its own process -> chat with the fresh adapter -> export (zip).

Tiny model, two optimiser steps, one row per step: the run takes seconds, and every
code path (launcher, trainer process, events, adapter, chat, zip) is the real one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DATA
from tests.support.wait import until

pytestmark = pytest.mark.timeout(600)


def _tiny_config(model_dir: Path, runs: Path):
    from lora_tui.core.config import Config

    config = Config()
    config.model.name = str(model_dir)
    config.data.train = str(SAMPLE_DATA / "train.jsonl")
    config.data.validation = None
    config.data.val_fraction = 0.02
    config.data.max_seq_len = 64
    config.training.micro_batch = 1
    config.training.grad_accum = 1
    config.training.eval_steps = 0
    config.training.save_steps = 0
    config.output.runs_dir = str(runs)
    config.output.run_name = "wizard-run"
    return config


async def _type_into(pilot, selector: str, text: str) -> None:
    """Focus an input and replace its text, with keys only."""
    pilot.app.screen.query_one(selector).focus()
    await pilot.pause()
    await pilot.press("end", *["backspace"] * 40, *list(text))


def test_whole_flow_by_keyboard(tiny_model_dir, tmp_path):
    from lora_tui.ui.app import make_app
    from lora_tui.ui.state import WizardState

    state = WizardState(config=_tiny_config(tiny_model_dir, tmp_path / "runs"))

    async def walk():
        app = make_app(state=state)
        async with app.run_test(size=(80, 24)) as pilot:
            # 1. Model: the given local model is checked before we may move on.
            assert app.current_mode == "model"
            await until(pilot, lambda: state.model_check is not None, what="the model check")
            assert state.model_check.ok, state.model_check.message
            await pilot.press("ctrl+n")
            assert app.current_mode == "hardware"
            # 2. Hardware: the probe reports this machine (CPU-only here).
            await until(pilot, lambda: state.hardware is not None, what="the hardware probe")
            await pilot.press("ctrl+n")
            assert app.current_mode == "dataset"
            # 3. Dataset: validated with the model's tokenizer before moving on.
            await until(pilot, lambda: state.dataset_current() is not None, what="dataset validation")
            assert state.dataset.report.valid_rows > 0 and state.dataset.refusal() is None
            await pilot.press("ctrl+n")
            assert app.current_mode == "parameters"
            # 4. Parameters: a refused value never reaches the config; a good one does.
            screen = app.screen
            await _type_into(pilot, "#field-lora-r Input", "8")
            assert state.config.lora.r == 8 and not screen.query_one("#field-lora-r").error
            await pilot.press("x")  # "8x": refused where it is typed, the config keeps 8
            assert state.config.lora.r == 8
            assert "whole number" in screen.query_one("#field-lora-r").error
            await pilot.press("ctrl+n")  # and starting is refused while a field is invalid
            assert app.current_mode == "parameters" and state.run is None
            await pilot.press("backspace")
            assert state.config.lora.r == 8 and not screen.query_one("#field-lora-r").error
            await _type_into(pilot, "#field-training-max_steps Input", "2")
            assert state.config.training.max_steps == 2
            assert "training.max_steps=2" in str(screen.query_one("#command-line").render())
            # Going back and forth keeps every choice.
            await pilot.press("ctrl+b", "ctrl+b", "ctrl+b")
            assert app.current_mode == "model"
            await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
            assert app.current_mode == "parameters"
            assert state.config.training.max_steps == 2 and state.config.lora.r == 8
            assert app.screen.query_one("#field-training-max_steps Input").value == "2"
            # 5. Training: starts a detached trainer and follows its events to the end.
            await pilot.press("ctrl+n")
            await until(pilot, lambda: app.current_mode == "training", what="the training screen")
            training = app.screen
            await until(pilot, lambda: training.run_state in ("finished", "failed", "dead"), timeout=400,
                         what="the training run to end")
            assert training.run_state == "finished", (state.run.log_path.read_text()[-3000:])
            assert training.history.steps and training.history.step == 2
            assert training.history.outcome["type"] == "finished"
            assert (state.run.adapter_dir / "adapter_model.safetensors").is_file()
            # 6. Chat: a streamed reply from the adapter, then base vs adapter side by side.
            await pilot.press("ctrl+n")
            assert app.current_mode == "chat"
            chat = app.screen
            await until(pilot, lambda: chat.session is not None, timeout=120, what="the chat model to load")
            await _type_into(pilot, "#set-max_new_tokens", "6")
            await _type_into(pilot, "#prompt", "How do I read a map scale?")
            await pilot.press("enter")
            await until(pilot, lambda: not chat._busy and len(chat.messages) == 2, timeout=120,
                         what="the streamed reply")
            assert chat.messages[0] == {"role": "user", "content": "How do I read a map scale?"}
            assert chat.messages[1]["role"] == "assistant"
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, timeout=120, what="base vs adapter")
            assert chat.query_one("#compare").display
            assert "Q: How do I read a map scale?" in str(chat.query_one("#compare-right").render())
            # 7. Export: zip the adapter.
            await pilot.press("ctrl+n")
            assert app.current_mode == "export"
            await until(pilot, lambda: getattr(app.screen, "STEP", None) == "export" and bool(app.screen._summary_data),
                        what="the Export step's summary of the run")
            await pilot.press("z")
            zip_path = state.run.path / "wizard-run-adapter.zip"
            await until(pilot, zip_path.is_file, timeout=60, what="the zip")
            await pilot.press("ctrl+q")  # nothing is training: quits at once
        assert app.return_code == 0

    asyncio.run(walk())
