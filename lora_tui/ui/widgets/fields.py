"""One row of the parameters form: name, editor, and the help (or the reason a value is refused), wrapped
beside the editor so none of it is cut at 80 columns.

The editor matches the field's type: a Select for choices, a Checkbox for
booleans, an Input for numbers and text. A row never changes the Config by
itself: it posts ``FieldRow.Edited`` with the text or value, and the screen
checks it with ``check_value`` and refuses or applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from lora_tui.ui.widgets.tick import Tick

from lora_tui.core.config import field_help, section_fields


def display_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class FieldRow(Horizontal):
    """``section.key``: label and editor on the first line, the help wrapped beside them."""

    @dataclass
    class Edited(Message):
        row: "FieldRow"
        value: Any  # text from an Input, or the chosen/checked value

    def __init__(self, section: str, key: str, value: Any, choices: tuple[str, ...] | None = None,
                 custom: bool = False) -> None:
        """``custom``: a second, free-text row for a field whose main row is a Select (lora.targets)."""
        super().__init__(classes="field-row" + (" custom-targets" if custom else ""),
                         id=f"field-{section}-{key}" + ("-custom" if custom else ""))
        self.section, self.key, self.custom = section, key, custom
        self.field = section_fields(section)[key]
        self.help = field_help(section, key)
        self.choices = None if custom else choices if choices is not None else self.field.metadata.get("choices")
        self.initial = value
        self.error: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"

    def compose(self) -> ComposeResult:
        yield Label("  names" if self.custom else self.key, classes="field-name")
        kind = str(self.field.type)
        if self.choices:
            yield Select([(c, c) for c in self.choices], value=self.initial if self.initial in self.choices else
                         Select.NULL, allow_blank=False, compact=True, classes="field-editor")
        elif kind.startswith("bool"):
            yield Tick("", value=bool(self.initial), compact=True, classes="field-editor")
        else:
            yield Input(self._text(self.initial), compact=True, classes="field-editor",
                        select_on_focus=False)
        yield Static(Text(self.help), classes="field-help")

    def _text(self, value: Any) -> str:
        """A field whose None means auto (training.micro_batch) shows the word."""
        return "auto" if value is None and self.field.metadata.get("auto") else display_value(value)

    @property
    def editor(self):
        return self.query_one(".field-editor")

    def show_value(self, value: Any) -> None:
        """Put ``value`` in the editor without reporting it as an edit."""
        editor = self.editor
        with editor.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            if isinstance(editor, Select):
                if value in (self.choices or ()):
                    editor.value = value
            elif isinstance(editor, Checkbox):
                editor.value = bool(value)
            elif editor.value != self._text(value):
                editor.value = self._text(value)
        self.set_error(None)

    def set_error(self, error: str | None) -> None:
        self.error = error
        self.set_class(error is not None, "-invalid")
        help_widget = self.query_one(".field-help", Static)
        if error:
            help_widget.update(Text("✗ " + error, style="bold red"))
        elif self.note:
            help_widget.update(Text.assemble((self.note, "bold"), "\n", self.help))
        else:
            help_widget.update(Text(self.help))

    note: str | None = None

    def set_note(self, note: str | None) -> None:
        """A live note above the help (e.g. which layers 'qv' resolves to)."""
        self.note = note
        if self.error is None:
            self.set_error(None)

    @on(Input.Changed)
    def _input(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Edited(self, event.value))

    @on(Select.Changed)
    def _select(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL:
            self.post_message(self.Edited(self, event.value))

    @on(Checkbox.Changed)
    def _checkbox(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.post_message(self.Edited(self, event.value))
