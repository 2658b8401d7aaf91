"""Step 6, Chat: talk to the freshly trained adapter. Replies stream in as they are
generated; the conversation is multi-turn; temperature, top-p, top-k and length
are editable; ctrl+t switches who answers (each loaded adapter, then the base model
alone), and each answerer keeps its own conversation (core.chat.conversations): the
header names who answers and the view shows its conversation, never another's answers.
ctrl+r puts two answers side by side (screens/chat_compare.py); ctrl+o adds another
finished or stopped run trained on the same base model (screens/chat_adapters.py).

An optional system message (the CLI's ``--system``) goes first in every request.
The model loads and generates in thread workers through ``lora_tui.core.chat.session``;
streaming replies arrive as ``ReplyProgress`` messages that replace each other.
"""

from __future__ import annotations

import threading
import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Static
from textual.worker import Worker

from lora_tui.core.chat.conversations import Conversations
from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ChatReady, ReplyProgress, WorkProgress
from lora_tui.ui.screens.chat_adapters import BASE
from lora_tui.ui.screens.chat_compare import PAINT_EVERY_S, SIDES, ChatCompare
from lora_tui.ui.widgets.chat_bubble import ChatBubble
from lora_tui.ui.widgets.tick import Tick
from lora_tui.ui.workers import failure, thread_worker

SETTINGS = (  # (field of GenerationSettings, label, type, lowest, highest)
    ("temperature", "temp", float, 0.0, 5.0),
    ("top_p", "top-p", float, 0.0, 1.0),
    ("top_k", "top-k", int, 0, 1000),
    ("max_new_tokens", "max", int, 1, 8192),
)
DEFAULTS = {"temperature": "0.3", "top_p": "0.9", "top_k": "40", "max_new_tokens": "256"}


class ChatScreen(ChatCompare):
    STEP = "chat"
    BINDINGS = [
        Binding("ctrl+t", "toggle_adapter", "Adapter"),
        Binding("ctrl+r", "compare", "Compare"),
        Binding("ctrl+g", "compare_with", "Vs"),
        Binding("ctrl+o", "add_run", "Add run"),
        Binding("ctrl+l", "new_chat", "New chat"),
        Binding("escape", "stop", "Stop"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conversations = Conversations()  # each answerer's own: the base never reads an adapter's answers
        self._reply_id = 0
        self._stop = threading.Event()
        self._bubble: ChatBubble | None = None
        self._streamed = ""  # the current reply's text so far (set by its worker), kept when the worker fails
        self._reply_who = BASE  # who writes the current reply
        self._replying = False  # a turn of a conversation is being written (not a comparison)
        self._shown_who: str | None = None  # whose conversation the view shows

    @property
    def messages(self) -> list[dict]:
        """The conversation of the one answering now (your turns and its own answers)."""
        return self.conversations.of(self.answering)

    def compose_body(self) -> ComposeResult:
        with Vertical(id="chat-body", classes="body"):
            yield Static(id="chat-header")
            yield Static(id="chat-adapters")
            with Horizontal(id="chat-settings", classes="row"):
                yield Tick("adapter", value=True, id="use-adapter", compact=True)
                for name, label, _, _, _ in SETTINGS:
                    yield Label(f" {label} ", classes="setting-label")
                    yield Input(DEFAULTS[name], id=f"set-{name}", compact=True, classes="setting")
                yield Tick("greedy", value=False, id="greedy", compact=True)
            with Horizontal(id="chat-system", classes="row"):
                yield Label("system ", classes="setting-label")
                yield Input(placeholder="optional system message, sent before every turn (the CLI's --system)",
                            id="system", compact=True)
            yield VerticalScroll(id="conversation")
            with Horizontal(id="compare"):
                for side in SIDES:
                    with VerticalScroll(classes="compare-side", id=f"compare-{side}-pane"):
                        yield Static(id=f"compare-{side}")
            yield Input(placeholder="Type a message, Enter to send (ctrl+r: both answer, side by side)", id="prompt")

    def on_mount(self) -> None:
        self.query_one("#compare").display = False
        self.query_one("#chat-adapters").display = False

    # --- loading the model --------------------------------------------------------------------
    def sync_from_state(self) -> None:
        run = self.state.run
        header = self.query_one("#chat-header", Static)
        if run is None:
            header.update("[yellow]No run yet: train an adapter first (Parameters step), or open a run with "
                          "lora-tui --run DIR.[/]")
            return
        if self._loaded_for != str(run.path):
            self._loaded_for = str(run.path)
            self.session = None
            self.conversations.clear()
            self._shown_who, self.last_prompt = None, ""
            self.query_one("#conversation").remove_children()
            header.update(f"Loading the model and the adapter of {run.name}…")
            self._load(run)
        self.query_one("#prompt", Input).focus()

    def state_changed(self, what: str) -> None:
        # A load still running will answer; only a failed one (no adapter yet) is worth retrying.
        if what in ("run", "run-ended") and self.session is None and self._loaded_for is None:
            if self.app.screen is self:
                self.sync_from_state()

    @thread_worker("chat-load")
    def _load(self, run) -> None:
        session = self.backend.open_chat(run, on_progress=lambda text, fraction:
                                         self.post_message(WorkProgress("chat", text, fraction)))
        self.post_message(ChatReady(session, path=str(run.path)))

    @on(WorkProgress)
    def _loading(self, message: WorkProgress) -> None:
        if message.source == "chat" and self.session is None:
            self.query_one("#chat-header", Static).update(f"{message.text}…")

    @on(ChatReady)
    def _ready(self, message: ChatReady) -> None:
        if message.path != self._loaded_for:
            return  # loaded for a run no longer shown
        header = self.query_one("#chat-header", Static)
        if message.error:
            header.update(Text(f"✗ {message.error}", style="bold red"))
            self._loaded_for = None  # try again next time the step is shown
            return
        self.session = message.session
        names = self.adapter_names()
        self.answering = getattr(self.session, "default_adapter", None) or (names[0] if names else BASE)
        self.partner = BASE if self.answering != BASE else (names[0] if names else BASE)
        self._addable = None
        self._show_adapters()
        run = self.state.run
        if run is not None:
            self._find_runs(self.session, str(run.path.parent), message.path)

    def _show_header(self) -> None:
        """Who answers now, on which base model: the header follows ctrl+t."""
        if self.session is None:
            return
        source = getattr(self.session, "source", None)
        base = f"{getattr(source, 'base_model', '?')} ({self.session.device})"
        if self.answering == BASE:
            who = [("the base model alone", "bold"), (f", {base}, no adapter", "dim")]
        else:
            adapter = self.session.adapters.get(self.answering) if hasattr(self.session, "adapters") else source
            folder = getattr(adapter, "adapter_dir", None) or "?"
            name = "the adapter " if len(self.adapter_names()) == 1 else f"{self.answering}, "
            who = [(f"{name}{folder}", "bold"), (f" on {base}", "dim")]
        note = getattr(source, "note", "")
        self.query_one("#chat-header", Static).update(Text.assemble(
            ("Chatting with ", ""), *who, (f"  {note}" if note else "", "yellow")))

    def _show_adapters(self) -> None:
        super()._show_adapters()
        self._show_header()
        self._show_conversation()

    def _show_conversation(self) -> None:
        """The one answering now: its own conversation, titled so; the others' wait unchanged."""
        view = self.query_one("#conversation", VerticalScroll)
        turns = self.conversations.turns(self.answering)
        view.border_title = f"{self.answer_title(self.answering)}: its own conversation, {turns} " \
                            f"answer{'' if turns == 1 else 's'}"
        other = self.adapter_names() and self._cycle(self.answering)
        view.border_subtitle = f"ctrl+t: the {self.answer_title(other).lower()}'s" if other else ""
        if self._shown_who == self.answering:
            return
        self._shown_who = self.answering
        view.remove_children()
        bubbles = [ChatBubble("You" if m["role"] == "user" else self.answer_title(self.answering), m["content"],
                              m["role"] if m["role"] == "user" else "assistant") for m in self.messages]
        elsewhere = {who: self.conversations.turns(who) for who in self.adapter_names() + [BASE] if who != self.answering}
        if not bubbles and any(elsewhere.values()):  # a fresh conversation beside another's: say why it is empty
            told = ", ".join(f"{self.answer_title(who).lower()}'s {n} answer{'' if n == 1 else 's'}"
                             for who, n in elsewhere.items() if n)
            bubbles.append(Static(f"A conversation of its own: the {self.answer_title(self.answering).lower()} does "
                                  f"not see the {told}.", classes="hint conversation-hint"))
        if self._replying and self._reply_who == self.answering and self._bubble is not None:
            self._bubble = ChatBubble(self._bubble.who, self._streamed or "…", "assistant")
            bubbles.append(self._bubble)
        view.mount_all(bubbles)
        view.scroll_end(animate=False)

    # --- settings -----------------------------------------------------------------------------
    def settings(self):
        """GenerationSettings from the inputs; a refused value is marked and None returned."""
        values, bad = {}, None
        for name, label, kind, low, high in SETTINGS:
            widget = self.query_one(f"#set-{name}", Input)
            try:
                value = kind(widget.value.strip())
                if not low <= value <= high:
                    raise ValueError
                values[name] = value
                widget.remove_class("-invalid")
            except ValueError:
                widget.add_class("-invalid")
                bad = bad or f"{label} must be a {'whole ' if kind is int else ''}number from {low} to {high}."
        if bad:
            self.notify(bad, severity="error", timeout=6)
            return None
        values["greedy"] = self.query_one("#greedy", Checkbox).value
        return self.backend.generation_settings(**values)

    def system_messages(self) -> list[dict]:
        """The system message typed above the conversation, as the first message of every request."""
        text = self.query_one("#system", Input).value.strip()
        return [{"role": "system", "content": text}] if text else []

    # --- talking --------------------------------------------------------------------------------
    def _can_talk(self) -> str | None:
        if self.session is None:
            return "The model is still loading." if self._loaded_for else "No adapter to chat with yet."
        if self._busy:
            return "Still answering (esc stops it)."
        return None

    def _start(self) -> int:
        self._reply_id += 1
        self._busy = True
        self._stop.clear()
        return self._reply_id

    @on(Input.Submitted, "#prompt")
    def _send(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            return
        reason = self._can_talk()
        settings = self.settings() if reason is None else None
        if reason or settings is None:
            if reason:
                self.notify(reason, timeout=4)
            return
        event.input.value = ""
        self.query_one("#compare").display = False
        self.query_one("#conversation").display = True
        who = self._reply_who = self.answering
        self.last_prompt = prompt
        self.messages.append({"role": "user", "content": prompt})
        conversation = self.query_one("#conversation", VerticalScroll)
        conversation.query(".conversation-hint").remove()
        conversation.mount(ChatBubble("You", prompt, "user"))
        self._bubble = ChatBubble(self.answer_title(who), "…", "assistant")
        conversation.mount(self._bubble)
        conversation.scroll_end(animate=False)
        self._streamed, self._replying = "", True
        self._stream(self._start(), self.system_messages() + self.messages, who, settings)

    @thread_worker("reply")
    def _stream(self, reply_id: int, messages: list[dict], who: str, settings) -> None:
        text, painted = "", 0.0
        for piece in self.session.stream(messages, adapter=who, settings=settings, should_stop=self._stop.is_set):
            text += piece
            self._streamed = text  # all that was written, painted or not: a failure keeps it (a str, no widget)
            if time.monotonic() - painted >= PAINT_EVERY_S:
                painted = time.monotonic()
                self.post_message(ReplyProgress(reply_id, text))
        self.post_message(ReplyProgress(reply_id, text, done=True))

    @on(ReplyProgress)
    def _progress(self, message: ReplyProgress) -> None:
        if message.reply_id != self._reply_id:
            return
        if message.side is not None:
            self._compare_progress(message)
            return
        if self._bubble is None:
            return
        note = ""
        if message.done:
            self._busy = self._replying = False
            if message.error:
                note = f"✗ {message.error}"
            elif self._stop.is_set():
                note = "(stopped)"
            conversation = self.conversations.of(self._reply_who)
            if message.text and not message.error:
                conversation.append({"role": "assistant", "content": message.text})
            elif conversation and conversation[-1]["role"] == "user":
                conversation.pop()  # no answer: the question may be asked again
            self._show_conversation()
        if self._bubble.is_attached:  # else its answerer's conversation is not the one shown
            self._bubble.set_text(message.text or ("" if message.done else "…"), note)
        self.query_one("#conversation", VerticalScroll).scroll_end(animate=False)

    def action_stop(self) -> None:
        if self._busy:
            self._stop.set()

    def action_new_chat(self) -> None:
        if self._busy:
            self.notify("Still answering (esc stops it).", timeout=4)
            return
        self.conversations.clear()
        self.last_prompt = ""
        self._shown_who = None
        self._show_conversation()
        self.query_one("#compare").display = False
        self.query_one("#conversation").display = True

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The loading and answering workers that raised: the error where their result would show.
        (ChatAdapters' and ChatCompare's handlers, called too, take the adapter and compare workers.)"""
        failed = failure(event)
        if failed is None:
            return
        call, error = failed.args, plain_error(failed.error)
        if failed.group == "chat-load":
            self.post_message(ChatReady(None, error=error, path=str(call["run"].path)))
        elif failed.name == "_stream":  # the text so far stays; every piece was shown before the failure
            reply_id = call["reply_id"]
            text = self._streamed if reply_id == self._reply_id else ""
            self.post_message(ReplyProgress(reply_id, text, done=True, error=error))

    def next_refusal(self) -> str | None:
        if self.state.run is None:
            return "No run yet: train an adapter first."
        return None
