"""One turn of the Chat screen's conversation: who spoke, then the text.

Model output is arbitrary text, so it is never parsed as markup. No workers, no files.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class ChatBubble(Static):
    """One turn: who spoke, then the text (never parsed as markup: model output is arbitrary)."""

    def __init__(self, who: str, text: str = "", style: str = "") -> None:
        super().__init__(classes=f"bubble {style}")
        self.who, self.body = who, text

    def set_text(self, text: str, note: str = "") -> None:
        self.body = text
        self.update(self._bubble_text(note))

    def on_mount(self) -> None:
        self.update(self._bubble_text())

    def _bubble_text(self, note: str = "") -> Text:
        text = Text(self.who + "  ", style="bold")
        text.append(self.body)
        if note:
            text.append(f"  {note}", style="dim italic")
        return text
