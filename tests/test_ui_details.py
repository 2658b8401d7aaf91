"""Wizard details (issue 8, item 6): step and ETA at 80x24, readable log lines, the chat's
system message."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import REPO
from screenshots.fixed import FixedBackend, snapshot_state
from screenshots.make_demo_run import write_demo_run
from tests.support.ui import shown
from tests.support.wait import until

pytestmark = pytest.mark.timeout(120)


def _run(coro) -> None:
    asyncio.run(coro)


@pytest.fixture
def long_named_live_run(tmp_path):
    """A run training now (lock held), named the way default run names look."""
    from lora_tui.core.run.runs import RunDirectory

    run = RunDirectory(write_demo_run(tmp_path / "smollm2-135m-20261123-191200", last_step=30, finished=False))
    lock = run.acquire_lock()
    yield run
    lock.close()


def test_training_header_shows_step_and_eta_at_80x24(long_named_live_run):
    from lora_tui.ui.app import make_app

    async def go():
        app = make_app(run=str(long_named_live_run.path), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 30, 30)
            header = app.screen.query_one("#run-header")
            await until(pilot, lambda: any(line.startswith("step 30/") for line in shown(header)),
                        what="the header to show step 30")
            lines = shown(header)
            assert len(lines) == 2
            assert lines[0].startswith("smollm2-135m-20261123-191200 running")
            assert lines[1].startswith("step 30/60  ETA 45s"), lines

    _run(go())


def test_log_pane_shows_readable_lines(long_named_live_run):
    from lora_tui.ui.app import make_app

    async def go():
        app = make_app(run=str(long_named_live_run.path), backend=FixedBackend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training" and app.screen.history.step == 30, 30)
            await until(pilot, lambda: any("loss" in line for line in shown(app.screen.query_one("#log-tail"))),
                        30, what="the log tail")
            lines = shown(app.screen.query_one("#log-tail"))
            assert not any("{'" in line for line in lines), lines
            assert "loss 0.9318 · grad norm 0.415 · lr 3.71e-05 · epoch 1.75" in lines

    _run(go())


def test_readable_log_line():
    from lora_tui.ui.widgets.run_panels import readable_log_line

    assert readable_log_line("{'train_runtime': '97.0', 'train_samples_per_second': '9.37', 'epoch': '3.0'}") == \
        "runtime 97s · samples/s 9.37 · epoch 3"
    for other in ("Adapter saved to x", "{not a dict}", "{__import__('os').system('true')}", "{}"):
        assert readable_log_line(other) == other


class _RecordingSession:
    """A ChatSession over the real tokenizer and training formatter that records each prompt it would feed the model."""

    def __init__(self, tokenizer) -> None:
        from lora_tui.core.chat.session import ChatSession

        self.inner = ChatSession(None, tokenizer, has_adapter=True)
        self.has_adapter, self.device, self.source, self.prompts = True, "cpu", None, []

    def stream(self, messages, *, use_adapter=True, adapter=None, settings=None, should_stop=None, prompt_format=None):
        ids = self.inner.encode(messages)["input_ids"][0]
        self.prompts.append(self.inner.tokenizer.decode(ids))
        yield "Aye."


def test_chat_system_message_reaches_the_models_prompt(monkeypatch, embedded_tokenizer):
    from textual.widgets import Input

    from lora_tui.ui.app import make_app

    monkeypatch.chdir(REPO)
    session = _RecordingSession(embedded_tokenizer)

    class Backend(FixedBackend):
        def open_chat(self, run, on_progress=None):
            return session

    async def go():
        app = make_app(run="tests/snapshot_apps/runs/capn-lora-demo", state=snapshot_state(), backend=Backend())
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.current_mode == "training", 30)
            app.goto("chat")
            await until(pilot, lambda: app.current_mode == "chat" and app.screen.session is session, 30)
            app.screen.query_one("#system", Input).value = "Answer like a pirate captain."
            app.screen.query_one("#prompt", Input).focus()
            await pilot.press(*"Hello", "enter")
            await until(pilot, lambda: session.prompts and not app.screen._busy, 30, what="the reply")
            assert "Answer like a pirate captain." in session.prompts[0]
            assert session.prompts[0].index("Answer like a pirate") < session.prompts[0].index("Hello")
            assert app.screen.messages == [{"role": "user", "content": "Hello"},
                                           {"role": "assistant", "content": "Aye."}]  # not in the history

    _run(go())
