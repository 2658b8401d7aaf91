"""The Chat step with several adapters (issue 19 item 1), driven by Pilot on real chat sessions over the
tiny random model: it lists the finished runs on the same base, adds one, and ctrl+t switches who answers."""

from __future__ import annotations

import asyncio

import pytest

from screenshots.fixed import FixedBackend
from tests.support.chat import make_fake_run
from tests.support.ui import goto
from tests.support.wait import until

pytestmark = pytest.mark.timeout(600)


class RealChat(FixedBackend):
    """Fixed hardware (no NVML here); the chat and the run listing are the real ones."""

    def open_chat(self, run, on_progress=None):
        from lora_tui.ui.backend import Backend

        return Backend.open_chat(self, run, on_progress)

    def chat_runs(self, session, folder):
        from lora_tui.ui.backend import Backend

        return Backend.chat_runs(self, session, folder)


def test_chat_screen_adds_a_run_on_the_same_base_and_ctrl_t_switches(tmp_path, tiny_model_dir):
    from textual.widgets import Checkbox, Input, OptionList

    from lora_tui.core.chat.session import ChatSession, GenerationSettings
    from lora_tui.ui.app import make_app
    from lora_tui.ui.screens.chat_adapters import AddRun

    root = tmp_path / "runs"
    a = make_fake_run(root, tiny_model_dir, name="run-a", seed=1)
    b = make_fake_run(root, tiny_model_dir, name="run-b", seed=2)
    other = make_fake_run(root, tiny_model_dir, name="run-8bit", load_in="8bit", with_adapter=False)
    (other / "adapter").symlink_to(b / "adapter")  # another base load: never offered
    greedy = GenerationSettings(greedy=True, max_new_tokens=8)
    prompt = [{"role": "user", "content": "Tell me a story"}]
    answers = {"run-a": ChatSession.from_run(a, device="cpu").reply(prompt, settings=greedy)}
    alone_b = ChatSession.from_run(b, device="cpu")
    answers.update({"run-b": alone_b.reply(prompt, settings=greedy),
                    "base": alone_b.reply(prompt, use_adapter=False, settings=greedy)})
    assert len(set(answers.values())) == 3

    async def ask(pilot, chat) -> str:
        chat.query_one("#prompt", Input).value = "Tell me a story"
        chat.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: not chat._busy and chat.messages and chat.messages[-1]["role"] == "assistant",
                    timeout=120, what="the reply")
        answer = chat.messages[-1]["content"]
        chat.action_new_chat()
        return answer

    async def go():
        app = make_app(run=str(a), backend=RealChat())
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.current_mode == "training")
            await goto(pilot, "chat")
            chat = app.screen
            await until(pilot, lambda: chat.session is not None and chat._addable, timeout=180,
                        what="the chat model and the runs on its base")
            assert chat._addable == [("run-b", b)] and chat.answering == "run-a"
            assert "ctrl+o adds a run (1 more on this base)" in str(chat.query_one("#chat-adapters").render())
            chat.query_one("#greedy", Checkbox).value = True
            chat.query_one("#set-max_new_tokens", Input).value = "8"
            await pilot.press("ctrl+o")
            await until(pilot, lambda: isinstance(app.screen, AddRun), what="the run picker")
            app.screen.query_one(OptionList).highlighted = 0
            await pilot.press("enter")
            await until(pilot, lambda: chat.adapter_names() == ["run-a", "run-b"] and not chat._busy, timeout=120,
                        what="run-b's adapter")
            assert chat.answering == "run-b" and not chat._addable
            assert await ask(pilot, chat) == answers["run-b"]
            seen = []
            for _ in range(3):  # run-b -> base -> run-a -> run-b
                await pilot.press("ctrl+t")
                seen.append((chat.answering, chat.query_one("#use-adapter", Checkbox).value))
            assert seen == [("base", False), ("run-a", True), ("run-b", True)]
            await pilot.press("ctrl+t")
            assert chat.answering == "base" and await ask(pilot, chat) == answers["base"]
            await pilot.press("ctrl+t")
            assert chat.answering == "run-a" and await ask(pilot, chat) == answers["run-a"]
            partners = [chat.partner]
            await pilot.press("ctrl+g")  # the other side of ctrl+r: any loaded adapter or the base, never itself
            partners.append(chat.partner)
            assert sorted(partners) == ["base", "run-b"]
            if chat.partner != "run-b":
                await pilot.press("ctrl+g")
            chat.query_one("#prompt", Input).value = "Tell me a story"
            await pilot.press("ctrl+r")
            await until(pilot, lambda: not chat._busy, timeout=120, what="the comparison")
            assert answers["run-a"] in str(chat.query_one("#compare-left").render())
            assert answers["run-b"] in str(chat.query_one("#compare-right").render())

    asyncio.run(go())
