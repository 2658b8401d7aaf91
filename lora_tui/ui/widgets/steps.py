"""The step bar at the top of every wizard screen: where you are, and a click to go elsewhere."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from lora_tui.ui.steps import STEPS


class StepBar(Widget):
    """One line: '1 Model  2 Hardware ...' with the current step highlighted; each step is clickable."""

    DEFAULT_CSS = """
    StepBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, current: str, steps: tuple[tuple[str, str], ...] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current
        self.steps = steps or STEPS
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.size.width >= 90:
            text.append(" lora-tui ", style="bold reverse")
            text.append(" ")
        self._spans = []
        current_index = [name for name, _ in self.steps].index(self.current) if self.current in dict(self.steps) else -1
        for index, (name, label) in enumerate(self.steps):
            piece = f" {index + 1} {label} "
            if name == self.current:
                style = "bold reverse"
            elif index < current_index:
                style = "green"
            else:
                style = "dim"
            start = len(text)
            text.append(piece, style=style)
            self._spans.append((start, len(text), name))
        return text

    def on_click(self, event) -> None:
        for start, end, name in self._spans:
            if start <= event.x < end:
                self.app.goto(name)
                return
