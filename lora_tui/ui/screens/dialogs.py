"""Small modal dialogs shared by the steps. Each returns a typed result with ``dismiss``:

- ``QuitDuringTraining`` -> "detach" | "stop" | None
- ``Confirm`` -> bool
- ``PathPrompt`` -> str | None (a path the user typed)
- ``FilePicker`` -> str | None (a dataset file or folder chosen in a tree)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label, Static

from lora_tui.core.run.runs import quoted

DATASET_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow"}


class QuitDuringTraining(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("d", "answer('detach')", "Detach"),
                Binding("s", "answer('stop')", "Stop")]

    def __init__(self, run_path: str) -> None:
        super().__init__(classes="dialog-screen")
        self.run_path = run_path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Training is still running", classes="dialog-title")
            yield Static(f"The trainer is its own process: quitting the wizard does not stop it.\n"
                         f"Reattach later with  lora-tui attach {quoted(self.run_path)}")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Detach and quit (d)", id="detach", variant="primary")
                yield Button("Stop training (s)", id="stop", variant="error")
                yield Button("Cancel (esc)", id="cancel")

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes"),
                Binding("n", "dismiss(False)", "No")]

    def __init__(self, title: str, text: str, yes: str = "Yes", no: str = "No", danger: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.text, self.yes, self.no, self.danger = title, text, yes, no, danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.text)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button(f"{self.no} (n)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PathPrompt(ModalScreen[str | None]):
    """Ask for a path (save or load a config, merge output...)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "", hint: str = "", must_exist: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.value, self.hint, self.must_exist = title, value, hint, must_exist

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, id="path", placeholder="path")
            yield Static(self.hint, id="path-hint", classes="hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one("#path", Input).value.strip()
        if not value:
            self.query_one("#path-hint", Static).update("Type a path first.")
            return
        if self.must_exist and not Path(value).expanduser().exists():
            self.query_one("#path-hint", Static).update(f"{value} does not exist.")
            return
        self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class DatasetTree(DirectoryTree):
    """Folders and the file kinds the dataset layer reads; hidden entries left out."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in DATASET_SUFFIXES)]


class FilePicker(ModalScreen[str | None]):
    """Pick a dataset: browse with the arrow keys, Enter on a file chooses it; or type a path."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+u", "up", "Parent folder")]

    def __init__(self, start: str | Path = ".", current: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.start = Path(start).expanduser()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Label("Choose a dataset", classes="dialog-title")
            yield Static("Arrows move, Enter opens a folder or picks a file, ctrl+u: parent folder, esc cancels.",
                         classes="hint")
            yield DatasetTree(self.start if self.start.is_dir() else Path("."), id="tree")
            yield Input(self.current, id="typed", placeholder="or type a path and press Enter", compact=True)

    def action_up(self) -> None:
        tree = self.query_one(DatasetTree)
        tree.path = Path(tree.path).resolve().parent

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(_relative(event.path)))

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())


def _relative(path: Path) -> Path:
    """Paths under the working directory are shown relative to it: shorter, and what a user types."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
