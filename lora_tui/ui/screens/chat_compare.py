"""The Chat step's ctrl+r: one prompt answered by two sides (the one answering and its partner, ctrl+g),
each from its own conversation, streamed into two panes one after the other on the one loaded model,
exactly as `lora-tui chat --compare` writes them (core.chat.conversations.stream_sides: one seed, the base
in its partner's prompt format). esc stops the answer being written and the other is not started.
The conversations stay as they were: a comparison is a look, not a turn.

ChatScreen (screens/chat.py) builds on this and supplies ``settings()``, ``system_messages()``,
``_can_talk()``, ``_start()`` and the widgets (#compare, #compare-left/right and their panes).
The worker only calls the core and posts ReplyProgress (with ``side``); the handlers own the widgets.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Input, Static
from textual.worker import Worker

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ReplyProgress
from lora_tui.ui.screens.chat_adapters import BASE, ChatAdapters
from lora_tui.ui.workers import failure, thread_worker

SIDES = ("left", "right")  # the one answering, and its partner
# A streaming answer is repainted at most this often: ten times a second reads as live, and the UI thread does
# not take the cores from the model once per token (the screen repaints the whole pane each time).
PAINT_EVERY_S = 0.1


class ChatCompare(ChatAdapters):
    """Two answers side by side, streamed and stoppable."""

    def __init__(self) -> None:
        super().__init__()
        self._compare_prompt = ""
        self._compare_texts = ["", ""]
        self._compare_side = 0  # the side being written
        self._compare_sofar: list[str] = []  # the worker's texts so far
        self.last_prompt = ""  # the last prompt sent or compared: an empty ctrl+r asks it again

    def action_compare(self) -> None:
        reason = self._can_talk()
        if reason is None and not self.adapter_names():
            reason = "No adapter loaded: nothing to compare with."
        settings = self.settings() if reason is None else None
        if reason or settings is None:
            if reason:
                self.notify(reason, timeout=4)
            return
        prompt_input = self.query_one("#prompt", Input)
        prompt = prompt_input.value.strip() or self.last_prompt
        if not prompt:
            self.notify(f"Type a prompt first; ctrl+r answers it with {self.answering} and with {self.partner}.",
                        timeout=5)
            return
        prompt_input.value = ""
        self.query_one("#conversation").display = False  # the panes take its room
        self.query_one("#compare").display = True
        sides = (self.answering, self.partner)
        self._compare_prompt, self._compare_texts, self._compare_side = prompt, ["", ""], 0
        self.last_prompt = prompt
        for side, who in zip(SIDES, sides):
            turns = self.conversations.turns(who)
            pane = self.query_one(f"#compare-{side}-pane", VerticalScroll)
            pane.border_title = ("Base model alone" if who == BASE else
                                 "With the adapter" if len(self.adapter_names()) == 1 else f"With {who}")
            pane.border_subtitle = f"after its {turns} earlier answer{'' if turns == 1 else 's'}" if turns else ""
        self._show_side(0, "generating…")
        self._show_side(1, "waits for the left answer")
        requests = [(who, self.system_messages() + self.conversations.asking(who, prompt)) for who in sides]
        self._compare(self._start(), requests, settings)

    @thread_worker("reply")
    def _compare(self, reply_id: int, requests: list, settings) -> None:
        from lora_tui.core.chat.conversations import stream_sides

        texts, current, painted = [""] * len(requests), 0, 0.0
        self._compare_sofar = texts  # all that was written, painted or not: a failure keeps it (a str list, no widget)
        for index, piece in stream_sides(self.session, requests, settings=settings, should_stop=self._stop.is_set):
            if index != current:
                self.post_message(ReplyProgress(reply_id, texts[current], done=True, side=current))
                current, painted = index, 0.0
            texts[index] += piece
            if time.monotonic() - painted >= PAINT_EVERY_S:
                painted = time.monotonic()
                self.post_message(ReplyProgress(reply_id, texts[index], side=index))
        for index in range(current, len(requests)):
            self.post_message(ReplyProgress(reply_id, texts[index], done=True, side=index))

    def _compare_progress(self, message: ReplyProgress) -> None:
        side = message.side
        if message.error:
            self._compare_texts[side] = self._compare_sofar[side] if side < len(self._compare_sofar) else ""
            self._show_side(side, f"✗ {message.error}")
            for later in range(side + 1, len(SIDES)):
                self._show_side(later, "(not asked)")
        elif message.done:
            self._compare_texts[side] = message.text
            stopped = self._stop.is_set()
            self._show_side(side, "(stopped)" if stopped and (message.text or side == self._compare_side)
                            else "(not asked: stopped)" if stopped else "")
        else:
            self._compare_side = side
            self._compare_texts[side] = message.text
            self._show_side(side)
        if message.error or (message.done and side == len(SIDES) - 1):
            self._busy = False

    def _show_side(self, side: int, note: str = "") -> None:
        text = self._compare_texts[side]
        self.query_one(f"#compare-{SIDES[side]}", Static).update(Text.assemble(
            ("Q: ", "bold"), self._compare_prompt, "\n\n", text,
            ((f"  {note}" if text else note) if note else "", "dim italic")))
        self.query_one(f"#compare-{SIDES[side]}-pane", VerticalScroll).scroll_end(animate=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A comparison that raised: the error in the pane being written, the text so far kept."""
        failed = failure(event)
        if failed is not None and failed.name == "_compare":
            self.post_message(ReplyProgress(failed.args["reply_id"], "", done=True, error=plain_error(failed.error),
                                            side=self._compare_side))
