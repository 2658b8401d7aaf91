"""Keys a user had to guess (issue 24 item 8), driven by Pilot: ctrl+t moves between the Dataset tabs from
anywhere, Enter applies a Hardware fix after coming back with ctrl+b, the file browser says esc cancels (and
it does), and the Chat's ctrl+o answers when no run can join and lists stopped runs that have an adapter.
(The foreground `lora-tui train` Ctrl-C question taking one key is tests/test_ui_terminal.py: it needs a real
terminal.)"""

from __future__ import annotations

import pytest
from textual.widgets import Footer, Input, TabbedContent

from tests.conftest import REPO
from tests.support.chat import make_fake_run
from tests.support.ui import on_screen, run_scene, words
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


def test_ctrl_t_goes_from_tab_to_tab_on_the_dataset_step(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        screen = app.screen
        screen.query_one("#data-path", Input).focus()  # typing a path: Tab-then-arrows would leave the field
        tabs = screen.query_one("#data-tabs", TabbedContent)
        seen = [tabs.active]
        for _ in range(3):
            await pilot.press("ctrl+t")
            await pilot.pause()
            seen.append(tabs.active)
        assert seen == ["tab-preview", "tab-findings", "tab-lengths", "tab-preview"]
        assert screen.query_one("#data-path", Input).has_focus  # the typing goes on where it was
        assert "Next tab" in words(on_screen(screen.query_one(Footer)))

    run_scene("dataset", check)


def test_enter_applies_a_hardware_fix_after_coming_back(monkeypatch, embedded_model_dir):
    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        assert app.screen.query_one("#fixes").display  # the tight plan has fixes
        before = app.state.config.to_dict()
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.current_mode == "dataset", what="the Dataset step")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: app.current_mode == "hardware" and app.screen.query_one("#fixes").display,
                    what="the Hardware step again")
        await pilot.press("enter")
        await until(pilot, lambda: app.state.config.to_dict() != before, 10, what="the fix to be applied")

    run_scene("hardware_fixes", check)


def test_the_file_browser_says_esc_cancels_and_it_does(monkeypatch, embedded_model_dir):
    from lora_tui.ui.screens.dialogs import FilePicker

    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        before = app.state.config.data.train
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, FilePicker), what="the file browser")
        await pilot.pause()
        assert "esc cancels" in words(on_screen(app.screen.query_one(".dialog")))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FilePicker), what="the browser to close")
        assert app.state.config.data.train == before

    run_scene("dataset", check)


def test_chat_ctrl_o_says_when_no_run_can_join(monkeypatch):
    monkeypatch.chdir(REPO)

    async def check(pilot, app):
        chat = app.screen
        said = []
        monkeypatch.setattr(chat, "notify", lambda message, **kw: said.append(message))
        await until(pilot, lambda: chat._addable is not None, what="the runs on this base")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert said and "No other finished or stopped run" in said[-1], said

    run_scene("chat", check)


def test_stopped_runs_with_an_adapter_can_join_a_chat(tmp_path, tiny_model_dir):
    from lora_tui.core.chat.adapters import resolve_adapters, runs_sharing_base
    from lora_tui.core.run.runs import RunDirectory

    root = tmp_path / "runs"
    first = make_fake_run(root, tiny_model_dir, name="first")
    stopped = make_fake_run(root, tiny_model_dir, name="stopped", seed=2)
    RunDirectory(stopped).write_status("stopped", step=5, max_steps=12)
    failed = make_fake_run(root, tiny_model_dir, name="failed", seed=3, with_adapter=False)
    RunDirectory(failed).write_status("failed", step=2, max_steps=12)
    like, _ = resolve_adapters([first])
    assert RunDirectory(stopped).state() == "stopped"
    assert runs_sharing_base(root, like, exclude=[first]) == [("stopped", stopped)]
