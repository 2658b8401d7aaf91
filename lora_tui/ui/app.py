"""Placeholder wizard app (replaced by the full wizard)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class LoraTuiApp(App):
    TITLE = "lora-tui"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, model: str | None = None, data: str | None = None, run: str | None = None) -> None:
        super().__init__()
        self.initial_model, self.initial_data, self.initial_run = model, data, run

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("lora-tui: the wizard is coming. Use `lora-tui --help` for the headless commands.")
        yield Footer()


def make_app(model: str | None = None, data: str | None = None, run: str | None = None) -> LoraTuiApp:
    return LoraTuiApp(model=model, data=data, run=run)
