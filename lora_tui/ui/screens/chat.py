"""Step 6, Chat: talk to the freshly trained adapter. Replies stream in as they are
generated; the conversation is multi-turn; temperature, top-p, top-k and length
are editable; ctrl+t switches who answers (each loaded adapter, then the base model
alone); and ctrl+r puts two answers to the same prompt side by side (the one answering
and the one chosen with ctrl+g, the base model by default). ctrl+o adds another
finished run trained on the same base model; its adapter loads beside the others.

An optional system message (the CLI's ``--system``) goes first in every request.
The model loads and generates in thread workers through ``lora_tui.core.chat.session``;
streaming replies arrive as ``ReplyProgress`` messages that replace each other.
"""

from __future__ import annotations

import threading

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Static
from textual.worker import Worker

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ChatReady, CompareReady, ReplyProgress, WorkProgress
from lora_tui.ui.screens.chat_adapters import BASE, ChatAdapters
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


class ChatScreen(ChatAdapters):
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
        self.messages: list[dict] = []
        self._reply_id = 0
        self._stop = threading.Event()
        self._bubble: ChatBubble | None = None
        self._streamed = ""  # the current reply's text so far, kept when its worker fails

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
                with VerticalScroll(classes="compare-side"):
                    yield Label("With the adapter", classes="compare-title")
                    yield Static(id="compare-adapter")
                with VerticalScroll(classes="compare-side"):
                    yield Label("Base model alone", classes="compare-title")
                    yield Static(id="compare-base")
            yield Input(placeholder="Type a message, Enter to send (ctrl+r: base vs adapter)", id="prompt")

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
            self.messages.clear()
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
            self.query_one("#chat-header", Static).update(f"Loading: {message.text}…")

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
        self._show_header()
        names = self.adapter_names()
        self.answering = getattr(self.session, "default_adapter", None) or (names[0] if names else BASE)
        self.partner = BASE if self.answering != BASE else (names[0] if names else BASE)
        self._addable = []
        self._show_adapters()
        run = self.state.run
        if run is not None:
            self._find_runs(self.session, str(run.path.parent), message.path)

    def _show_header(self) -> None:
        source = getattr(self.session, "source", None)
        names = self.adapter_names()
        where = f"{len(names)} adapters" if len(names) > 1 else getattr(source, "adapter_dir", None) or "no adapter"
        note = getattr(source, "note", "")
        self.query_one("#chat-header", Static).update(Text.assemble(
            ("Chatting with ", ""), (f"{where}", "bold"),
            (f" on {getattr(source, 'base_model', '?')} ({self.session.device})", "dim"),
            (f"  {note}" if note else "", "yellow")))

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
        who = self.answering
        self.messages.append({"role": "user", "content": prompt})
        conversation = self.query_one("#conversation", VerticalScroll)
        conversation.mount(ChatBubble("You", prompt, "user"))
        self._bubble = ChatBubble(self.answer_title(who), "…", "assistant")
        conversation.mount(self._bubble)
        conversation.scroll_end(animate=False)
        self._reply_id += 1
        self._streamed = ""
        self._busy = True
        self._stop.clear()
        self._stream(self._reply_id, self.system_messages() + self.messages, who, settings)

    @thread_worker("reply")
    def _stream(self, reply_id: int, messages: list[dict], who: str, settings) -> None:
        text = ""
        for piece in self.session.stream(messages, adapter=who, settings=settings, should_stop=self._stop.is_set):
            text += piece
            self.post_message(ReplyProgress(reply_id, text))
        self.post_message(ReplyProgress(reply_id, text, done=True))

    @on(ReplyProgress)
    def _progress(self, message: ReplyProgress) -> None:
        if message.reply_id != self._reply_id or self._bubble is None:
            return
        self._streamed = message.text
        note = ""
        if message.done:
            self._busy = False
            if message.error:
                note = f"✗ {message.error}"
            elif self._stop.is_set():
                note = "(stopped)"
            if message.text and not message.error:
                self.messages.append({"role": "assistant", "content": message.text})
            elif self.messages and self.messages[-1]["role"] == "user":
                self.messages.pop()  # no answer: the question may be asked again
        self._bubble.set_text(message.text or ("" if message.done else "…"), note)
        self.query_one("#conversation", VerticalScroll).scroll_end(animate=False)

    def action_stop(self) -> None:
        if self._busy:
            self._stop.set()

    def action_new_chat(self) -> None:
        if self._busy:
            self.notify("Still answering (esc stops it).", timeout=4)
            return
        self.messages.clear()
        self.query_one("#conversation").remove_children()
        self.query_one("#compare").display = False

    # --- two answers side by side -------------------------------------------------------------------
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
        prompt = prompt_input.value.strip()
        history = list(self.messages)
        if prompt:
            history.append({"role": "user", "content": prompt})
        elif history and history[-1]["role"] == "assistant":
            history.pop()  # answer the last question again, both ways
            prompt = history[-1]["content"] if history else ""
        elif history:
            prompt = history[-1]["content"]
        if not prompt:
            self.notify(f"Type a prompt first; ctrl+r answers it with {self.answering} and with {self.partner}.",
                        timeout=5)
            return
        prompt_input.value = ""
        self.query_one("#conversation").display = bool(self.messages)  # room for the answers
        self.query_one("#compare").display = True
        sides = (self.answering, self.partner)
        titles = self.query(".compare-title").results(Label)
        for label, who in zip(titles, sides):
            label.update("Base model alone" if who == BASE else
                         "With the adapter" if len(self.adapter_names()) == 1 else f"With {who}")
        self.query_one("#compare-adapter", Static).update(Text("…generating", style="dim"))
        self.query_one("#compare-base", Static).update(Text("…waits for the first answer", style="dim"))
        self._busy = True
        self._compare(prompt, self.system_messages() + history, settings, sides)

    @thread_worker("reply")
    def _compare(self, prompt: str, history: list[dict], settings, sides: tuple[str, str]) -> None:
        adapter_text, base_text = self.session.compare(history, settings=settings, sides=sides)
        self.post_message(CompareReady(prompt, adapter_text, base_text))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The loading and answering workers that raised: the error where their result would show.
        (ChatAdapters' handler, called too, takes the adapter workers.)"""
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
        elif failed.name == "_compare":
            self.post_message(CompareReady(call["prompt"], None, None, error=error))

    @on(CompareReady)
    def _compared(self, message: CompareReady) -> None:
        self._busy = False
        if message.error:
            self.query_one("#compare-adapter", Static).update(Text(f"✗ {message.error}", style="red"))
            self.query_one("#compare-base", Static).update("")
            return
        self.query_one("#compare-adapter", Static).update(Text.assemble(("Q: ", "bold"), message.prompt, "\n\n",
                                                                        message.adapter_text or ""))
        self.query_one("#compare-base", Static).update(Text.assemble(("Q: ", "bold"), message.prompt, "\n\n",
                                                                     message.base_text or ""))

    def next_refusal(self) -> str | None:
        if self.state.run is None:
            return "No run yet: train an adapter first."
        return None
