"""A worker that raises (issue 18 item 5): the exception travels by Worker.StateChanged to its screen's
or the app's handler, which shows the same line the worker's own try/except used to show, and the wizard
keeps running. The exceptions here are real ones raised inside the thread workers by a backend method;
the backend is faked only because the real failures (a full disk, a broken model) cannot be made here
on demand. Each test waits for the message: without the routing it never comes and the wait times out."""

from __future__ import annotations

import asyncio

import pytest

from screenshots.fixed import FakeChatSession, FixedBackend
from screenshots.make_demo_run import write_demo_run
from tests.support.ui import export_screen, wizard_at
from tests.support.wait import until

pytestmark = pytest.mark.timeout(300)


class BrokenZip(FixedBackend):
    """The first zip fails as a full disk would; the next one works."""

    def __init__(self, tmp_path) -> None:
        super().__init__()
        self.tmp_path, self.calls = tmp_path, 0

    def zip_adapter(self, run, overwrite=False):
        self.calls += 1
        if self.calls == 1:
            raise OSError(28, "No space left on device")
        path = self.tmp_path / "adapter.zip"
        path.write_bytes(b"PK")
        return path


def test_export_worker_failure_is_shown_and_the_next_export_runs(tmp_path):
    from textual.widgets import Static

    backend = BrokenZip(tmp_path)

    async def scenario():
        async with export_screen(tmp_path, backend) as pilot:
            app = pilot.app
            screen = app.screen
            result = lambda: str(screen.query_one("#export-result", Static).render())  # noqa: E731
            await pilot.press("z")
            await until(pilot, lambda: "✗" in result(), what="the zip's failure on screen")
            # plain_error: an OSError reads as its own words, as the worker's except showed it
            assert result() == "✗ [Errno 28] No space left on device"
            assert not screen._busy  # the busy mark is cleared: the user may try again
            assert app.is_running
            await pilot.press("z")
            await until(pilot, lambda: "✓ Zipped" in result(), what="the second zip")
            assert backend.calls == 2
        assert app.return_code in (None, 0)

    asyncio.run(scenario())


class BrokenStream(FakeChatSession):
    """Answers one word, then fails as a generation bug would (a KeyError keeps its type name on screen)."""

    def __init__(self) -> None:
        self.replies = 0

    def stream(self, messages, *, use_adapter=True, adapter=None, settings=None, should_stop=None):
        self.replies += 1
        if self.replies == 1:
            yield "Arr "
            raise KeyError("logits")
        yield from super().stream(messages, adapter=adapter, settings=settings, should_stop=should_stop)


class BrokenChat(FixedBackend):
    def __init__(self) -> None:
        super().__init__()
        self.session = BrokenStream()

    def open_chat(self, run, on_progress=None):
        return self.session


def test_reply_worker_failure_keeps_the_text_so_far_and_the_chat_goes_on(tmp_path):
    from textual.widgets import Input

    path = write_demo_run(tmp_path / "demo-run", last_step=10, finished=True)

    async def scenario():
        async with wizard_at("chat", (120, 40), run=str(path), backend=BrokenChat()) as pilot:
            app = pilot.app
            chat = app.screen
            await until(pilot, lambda: chat.session is not None, what="the chat session")

            async def ask() -> str:
                chat.query_one("#prompt", Input).value = "Where is the treasure?"
                chat.query_one("#prompt", Input).focus()
                await pilot.press("enter")
                await until(pilot, lambda: chat._bubble is not None and not chat._busy, what="the reply's end")
                return str(chat._bubble.render())

            failed = await ask()
            assert "Arr" in failed  # the text streamed before the failure stays
            assert "✗ KeyError: 'logits'" in failed
            assert chat.messages == []  # no answer: the question may be asked again
            assert app.is_running
            answered = await ask()
            assert "✗" not in answered and chat.messages[-1]["role"] == "assistant"

    asyncio.run(scenario())


def test_app_worker_failure_reaches_the_plan_verdict(tmp_path):
    """The app's own workers report too: a memory estimate that raises becomes the verdict's error."""
    from lora_tui.ui.app import make_app
    from screenshots.fixed import snapshot_state

    class BrokenJudge(FixedBackend):
        def judge(self, config, hardware, longest=None):
            raise ValueError("model.name: no such model (fix: pick one from the list)")

    async def scenario():
        app = make_app(state=snapshot_state(), backend=BrokenJudge())
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.current_judgement() is not None, what="the plan's verdict")
            judged = app.current_judgement()
            assert judged.verdict is None
            assert judged.error == "model.name: no such model (fix: pick one from the list)"
            assert app.is_running

    asyncio.run(scenario())


class Recorded(FixedBackend):
    """A run whose zip and q8_0 GGUF exist already: each export asks before writing over them."""

    def __init__(self, tmp_path) -> None:
        super().__init__()
        self.tmp_path, self.calls = tmp_path, []

    def export_summary(self, run) -> dict:
        return {**super().export_summary(run), "zip": str(self.tmp_path / "adapter.zip"), "zip_bytes": 2,
                "gguf": [{"path": str(self.tmp_path / "demo-q8_0.gguf"), "type": "q8_0", "bytes": 4}]}

    def zip_adapter(self, run, overwrite=False):
        self.calls.append(("zip", overwrite))
        return self.tmp_path / "adapter.zip"

    def write_export(self, run, name, option=None, overwrite=False, on_progress=None):
        self.calls.append((name, overwrite))
        raise RuntimeError("llama.cpp's converter is missing (fix: pip install gguf)")


def test_export_asks_before_replacing_and_no_leaves_everything(tmp_path):
    """The one confirm -> start -> worker sequence: no starts nothing, yes starts with overwrite=True."""
    from textual.widgets import Static

    backend = Recorded(tmp_path)

    async def scenario():
        async with export_screen(tmp_path, backend) as pilot:
            app = pilot.app
            screen = app.screen
            await until(pilot, lambda: screen._summary_data.get("zip"), what="the summary")
            result = lambda: str(screen.query_one("#export-result", Static).render())  # noqa: E731
            for keys, name, title, done in ((("z",), "zip", "Replace the zip?", "✓ Zipped"),
                                            (("g", "enter"), "gguf", "Replace the GGUF?",  # the chooser: q8_0
                                             "✗ llama.cpp's converter is missing")):
                for answer in ("escape", "y"):
                    await pilot.press(*keys)
                    await until(pilot, lambda: getattr(app.screen, "title_text", "") == title, what=title)
                    await pilot.press(answer)
                    await until(pilot, lambda: app.screen is screen, what="the export screen again")
                    if answer == "escape":
                        assert not screen._busy and name not in [what for what, _ in backend.calls]
                await until(pilot, lambda: result().startswith(done), what=done)
                assert not screen._busy
            assert backend.calls == [("zip", True), ("gguf", True)]
            assert app.is_running

    asyncio.run(scenario())
