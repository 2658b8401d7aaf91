"""The Chat step's turns (issue 24 items 3, 4), driven by Pilot on the demo run: ctrl+r streams both answers
into their panes and esc stops it; each answerer keeps its own conversation and the header names who answers.

The chat model is a stand-in that answers canned words (a pirate adapter, a plain base) and records what it
was asked; it holds after its first piece until the test lets it go, so a test can look mid-answer. The real
model's side of the same calls (stream_sides, one seed, the base in its partner's format) is tested in
tests/test_chat_adapters.py and tests/test_chat_cli.py.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from textual.widgets import Input

from lora_tui.ui.widgets.chat_bubble import ChatBubble

from screenshots.fixed import FakeSource, FixedBackend, snapshot_state
from tests.conftest import REPO
from tests.support.wait import until

pytestmark = pytest.mark.timeout(120)
DEMO_RUN = "tests/snapshot_apps/runs/capn-lora-demo"
PIRATE = "Ahoy! Measure it with a ruler, matey."
PLAIN = "Compare the distance with the scale bar."


class Recording:
    """Answers word by word; records (who, messages, prompt_format, seed) per call; holds after the first word
    while ``hold`` is set."""

    has_adapter, device, source = True, "cpu", FakeSource()

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.hold = threading.Event()
        self.release = threading.Event()

    def stream(self, messages, *, use_adapter=True, adapter=None, settings=None, should_stop=None, prompt_format=None):
        who = "base" if adapter == "base" or not use_adapter else "adapter"
        self.calls.append((who, [dict(m) for m in messages], prompt_format, getattr(settings, "seed", None)))
        for i, word in enumerate((PIRATE if who == "adapter" else PLAIN).split(" ")):
            if should_stop is not None and should_stop():
                return
            yield (" " if i else "") + word
            if i == 0 and self.hold.is_set():
                self.release.wait(30)

    def compare(self, messages, *, settings=None, sides=None):  # what the wizard called before issue 24
        return tuple("".join(self.stream(messages, adapter=side, settings=settings)) for side in ("adapter", "base"))


def _chat_app(session):
    from lora_tui.ui.app import make_app

    class Backend(FixedBackend):
        def open_chat(self, run, on_progress=None):
            return session

    return make_app(run=DEMO_RUN, state=snapshot_state(), backend=Backend())


async def _open_chat(pilot, session):
    app = pilot.app
    await until(pilot, lambda: app.current_mode == "training", 30)
    app.goto("chat")
    await until(pilot, lambda: app.current_mode == "chat" and app.screen.session is session, 30, what="the chat")
    return app.screen


def _text(chat, selector: str) -> str:
    return str(chat.query_one(selector).render())


def _pane(chat, side: int) -> str:
    """What a compare pane shows (0 left, 1 right): its one plain Static, whatever its id."""
    from textual.widgets import Static

    return str([w for w in chat.query(".compare-side Static") if type(w) is Static][side].render())


def test_compare_streams_both_sides_and_esc_stops_it(monkeypatch):
    monkeypatch.chdir(REPO)
    session = Recording()

    async def go():
        async with _chat_app(session).run_test(size=(80, 24)) as pilot:
            chat = await _open_chat(pilot, session)
            chat.query_one("#prompt", Input).value = "How do I read a map scale?"
            session.hold.set()
            await pilot.press("ctrl+r")
            # Streamed: the first word shows while the answer is still being written.
            await until(pilot, lambda: "Ahoy!" in _pane(chat, 0), 20, what="the first word, streamed")
            assert chat._busy and "Measure" not in _pane(chat, 0)
            await pilot.press("escape")
            session.release.set()
            await until(pilot, lambda: not chat._busy, 20, what="the comparison to stop")
            assert "(stopped)" in _pane(chat, 0) and "ruler" not in _pane(chat, 0)
            assert "(not asked: stopped)" in _pane(chat, 1)
            assert [call[0] for call in session.calls] == ["adapter"]  # the second answer never started
            # Again, to the end: both sides stream, the base in the adapter's prompt format, one seed for both.
            session.hold.clear()
            session.calls.clear()
            await pilot.press("ctrl+r")  # an empty prompt asks the last one again
            await until(pilot, lambda: not chat._busy and PLAIN in _pane(chat, 1), 20,
                        what="both answers")
            assert PIRATE in _pane(chat, 0) and "stopped" not in _pane(chat, 0)
            (left, _, left_format, left_seed), (right, _, right_format, right_seed) = session.calls
            assert (left, right, left_format, right_format) == ("adapter", "base", None, "adapter")
            assert left_seed is not None and left_seed == right_seed

    asyncio.run(go())


def test_each_answerer_has_its_own_conversation_and_the_header_names_it(monkeypatch):
    monkeypatch.chdir(REPO)
    session = Recording()

    async def ask(pilot, chat, text: str) -> None:
        chat.query_one("#prompt", Input).value = text
        chat.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: not chat._busy and chat.messages[-1]["role"] == "assistant", 20, what="the reply")

    def user(text):
        return {"role": "user", "content": text}

    async def go():
        async with _chat_app(session).run_test(size=(80, 24)) as pilot:
            chat = await _open_chat(pilot, session)
            assert "Chatting with the adapter runs/capn-lora-demo/adapter" in _text(chat, "#chat-header")
            await ask(pilot, chat, "Hello")
            await ask(pilot, chat, "Where is the map?")
            await pilot.press("ctrl+t")  # the base model answers now
            assert chat.answering == "base"
            header = _text(chat, "#chat-header")
            assert "Chatting with the base model alone" in header and "adapter runs/" not in header
            view = chat.query_one("#conversation")
            assert "Base model: its own conversation, 0 answers" in view.border_title
            assert not view.query(ChatBubble)  # the adapter's turns are not the base's, and it says so:
            assert "does not see the adapter's 2 answers" in _text(chat, ".conversation-hint")
            await ask(pilot, chat, "Where is the map?")
            who, messages, _, _ = session.calls[-1]
            assert who == "base" and messages == [user("Where is the map?")]  # no "Ahoy!" to copy
            await pilot.press("ctrl+t")  # back to the adapter: its conversation continues where it was
            assert "Chatting with the adapter" in _text(chat, "#chat-header")
            assert len(chat.query_one("#conversation").query(ChatBubble)) == 4
            assert "Adapter: its own conversation, 2 answers" in chat.query_one("#conversation").border_title
            # ctrl+r: each side from its own conversation.
            chat.query_one("#prompt", Input).value = "And the compass?"
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, 20, what="the comparison")
            (_, adapter_saw, _, _), (_, base_saw, _, _) = session.calls[-2:]
            assert [m["content"] for m in adapter_saw] == ["Hello", PIRATE, "Where is the map?", PIRATE,
                                                           "And the compass?"]
            assert [m["content"] for m in base_saw] == ["Where is the map?", PLAIN, "And the compass?"]
            assert "after its 1 earlier answer" in chat.query_one("#compare-right-pane").border_subtitle

    asyncio.run(go())


def test_switching_while_a_reply_streams_keeps_it_with_its_answerer(monkeypatch):
    monkeypatch.chdir(REPO)
    session = Recording()

    def bubbles(chat) -> list[str]:
        return [str(b.render()) for b in chat.query_one("#conversation").query(ChatBubble)]

    async def go():
        async with _chat_app(session).run_test(size=(80, 24)) as pilot:
            chat = await _open_chat(pilot, session)
            session.hold.set()
            chat.query_one("#prompt", Input).value = "Hello"
            chat.query_one("#prompt", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: any("Ahoy!" in b for b in bubbles(chat)), 20, what="the first word")
            await pilot.press("ctrl+t")  # the base's conversation: the adapter's reply is not in it
            assert chat.answering == "base" and bubbles(chat) == []
            await pilot.press("ctrl+t")  # back: the reply still streams into the adapter's conversation
            assert chat.answering == "adapter" and len(bubbles(chat)) == 2
            session.release.set()
            await until(pilot, lambda: not chat._busy, 20, what="the reply")
            await pilot.pause()
            assert chat.conversations.of("adapter")[-1] == {"role": "assistant", "content": PIRATE}
            assert chat.conversations.of("base") == [] and PIRATE in bubbles(chat)[-1]
            # A comparison running while the answerer changes adds no reply to any conversation.
            session.hold.set()
            session.release.clear()
            chat.query_one("#prompt", Input).value = "Where is the map?"
            await pilot.press("ctrl+r")
            await until(pilot, lambda: "Ahoy!" in _pane(chat, 0), 20, what="the comparison")
            await pilot.press("ctrl+t", "ctrl+t")  # to the base and back: the adapter's conversation rebuilt
            assert chat.answering == "adapter" and len(bubbles(chat)) == 2  # no reply bubble for the comparison
            session.release.set()
            await until(pilot, lambda: not chat._busy, 20, what="the comparison's end")
            assert chat.conversations.of("base") == [] and len(chat.conversations.of("adapter")) == 2

    asyncio.run(go())


def test_a_comparison_that_fails_keeps_what_was_written(monkeypatch):
    monkeypatch.chdir(REPO)

    class Failing(Recording):
        def stream(self, messages, **kw):
            for i, piece in enumerate(super().stream(messages, **kw)):
                yield piece
                if kw.get("adapter") == "base" and i == 1:
                    raise KeyError("logits")

    session = Failing()

    async def go():
        async with _chat_app(session).run_test(size=(80, 24)) as pilot:
            chat = await _open_chat(pilot, session)
            chat.query_one("#prompt", Input).value = "How do I read a map scale?"
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, 20, what="the comparison")
            await pilot.pause()
            assert PIRATE in _pane(chat, 0)
            right = " ".join(_pane(chat, 1).split())
            assert "Compare the" in right and "✗ KeyError: 'logits'" in right, right
            assert chat.app.is_running

    asyncio.run(go())
