"""The step bar at the top of every wizard screen: where you are, and a click to go elsewhere."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from lora_tui.ui.steps import STEPS, Step


class StepBar(Widget):
    """One line: '1 Model  2 Hardware ...' with the current step highlighted; each step is clickable."""

    DEFAULT_CSS = """
    StepBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, current: str, steps: tuple[Step, ...] = STEPS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current
        self.steps = steps
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.size.width >= 90:
            text.append(" lora-tui ", style="bold reverse")
            text.append(" ")
        self._spans = []
        names = [step.name for step in self.steps]
        current_index = names.index(self.current) if self.current in names else -1
        for index, step in enumerate(self.steps):
            piece = f" {index + 1} {step.label} "
            if step.name == self.current:
                style = "bold reverse"
            elif index < current_index:
                style = "green"
            else:
                style = "dim"
            start = len(text)
            text.append(piece, style=style)
            self._spans.append((start, len(text), step.name))
        return text

    def on_click(self, event) -> None:
        for start, end, name in self._spans:
            if start <= event.x < end:
                self.app.goto(name)
                return
