"""Step 7, Export: where the adapter and its model card are, and the three ways to
take it elsewhere: a zip of the adapter, a merged standalone model, and an
Ollama Modelfile (written beside the merged model).

Zip and merge run in thread workers through ``lora_tui.core.export``; merging
never replaces an existing folder unless the user confirms.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static

from lora_tui.ui.messages import ExportDone, WorkProgress
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import Confirm, PathPrompt


def _size(path: Path) -> str:
    try:
        if path.is_dir():
            n = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            n = path.stat().st_size
    except OSError:
        return "?"
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class ExportScreen(WizardScreen):
    STEP = "export"
    BINDINGS = [Binding("z", "zip", "Zip"), Binding("m", "merge", "Merge"), Binding("o", "modelfile", "Modelfile")]

    def __init__(self) -> None:
        super().__init__()
        self._busy = False
        self._merged: Path | None = None
        self._shown_for: str | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="export-body", classes="body"):
            yield Static(id="export-where")
            with Horizontal(id="export-buttons", classes="row"):
                yield Button("Zip the adapter (z)", id="zip", compact=True)
                yield Button("Merge into a full model (m)", id="merge", compact=True)
                yield Button("Ollama Modelfile (o)", id="modelfile", compact=True)
            yield Static(id="export-result")
            with VerticalScroll(id="export-detail"):
                yield Static(id="export-text")

    def sync_from_state(self) -> None:
        run = self.state.run
        where = self.query_one("#export-where", Static)
        if run is None:
            where.update("[yellow]No run yet: train an adapter first, or open a run with lora-tui --run DIR.[/]")
            return
        if self._shown_for != str(run.path):
            self._shown_for = str(run.path)
            self._merged = None
            self.query_one("#export-result", Static).update("")
        where.update("Reading the run…")
        self._summary(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export-summary")
    def _summary(self, run) -> None:
        try:
            self.post_message(ExportDone("summary", self.backend.export_summary(run)))
        except Exception as exc:
            from lora_tui.ui.app import _plain_error

            self.post_message(ExportDone("summary", None, error=_plain_error(exc)))

    def _show_summary(self, summary: dict | None, error: str | None) -> None:
        run = self.state.run
        text = Text()
        adapter = Path(summary.get("adapter_dir") or run.adapter_dir) if summary else run.adapter_dir
        if error or not (adapter / "adapter_config.json").is_file():
            text.append(f"No adapter in {adapter} yet", style="bold yellow")
            text.append(f" ({error})" if error else ": it is written when training finishes or is stopped.")
            self.query_one("#export-where", Static).update(text)
            return
        text.append("Adapter     ", style="bold")
        text.append(f"{adapter}  ({_size(adapter)})\n")
        card = adapter / "README.md"
        text.append("Model card  ", style="bold")
        text.append(f"{card}\n" if card.is_file() else "none\n")
        for key, label in (("base_model", "Base model"), ("method", "Method"), ("train_loss", "Train loss"),
                           ("eval_loss", "Eval loss")):
            if summary.get(key) is not None:
                text.append(f"{label:<12}", style="bold")
                value = summary[key]
                text.append(f"{value:.4g}\n" if isinstance(value, float) else f"{value}\n")
        text.append("Load it     ", style="bold")
        text.append(f"PeftModel.from_pretrained(base, \"{adapter}\")", style="dim")
        self.query_one("#export-where", Static).update(text)
        if card.is_file() and not self.query_one("#export-result", Static).renderable:
            try:
                self.query_one("#export-text", Static).update(Text(card.read_text(encoding="utf-8")[:6000],
                                                                   style="dim"))
            except OSError:
                pass

    # --- actions -------------------------------------------------------------------------------
    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        {"zip": self.action_zip, "merge": self.action_merge, "modelfile": self.action_modelfile}[event.button.id]()

    def _refuse(self) -> bool:
        run = self.state.run
        if run is None or not (run.adapter_dir / "adapter_config.json").is_file():
            self.notify("No adapter to export yet.", severity="warning", timeout=5)
            return True
        if self._busy:
            self.notify("Still working on the last export.", timeout=4)
            return True
        return False

    def action_zip(self) -> None:
        if self._refuse():
            return
        self._busy = True
        self.query_one("#export-result", Static).update("Zipping the adapter…")
        self._zip(self.state.run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _zip(self, run) -> None:
        try:
            self.post_message(ExportDone("zip", self.backend.zip_adapter(run)))
        except Exception as exc:
            from lora_tui.ui.app import _plain_error

            self.post_message(ExportDone("zip", None, error=_plain_error(exc)))

    def action_merge(self) -> None:
        if self._refuse():
            return
        run = self.state.run
        default = str(run.path / "merged")

        def chosen(out: str | None) -> None:
            if not out:
                return
            path = Path(out).expanduser()
            if path.exists() and any(path.iterdir()):
                self.app.push_screen(Confirm("Replace the folder?", f"{out} exists and is not empty. Replace it "
                                             "with the merged model?", yes="Replace", danger=True),
                                     lambda yes: self._start_merge(out, True) if yes else None)
            else:
                self._start_merge(out, False)

        self.app.push_screen(PathPrompt("Merge the adapter into the base model: output folder", default,
                                        "A standalone model that loads with plain transformers, plus an Ollama "
                                        "Modelfile."), chosen)

    def _start_merge(self, out: str, overwrite: bool) -> None:
        self._busy = True
        self.query_one("#export-result", Static).update("Merging: loading the base model…")
        self._merge(self.state.run, out, overwrite)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _merge(self, run, out: str, overwrite: bool) -> None:
        try:
            result = self.backend.merge(run, out, overwrite=overwrite, on_progress=lambda text, fraction:
                                        self.post_message(WorkProgress("merge", text, fraction)))
            self.post_message(ExportDone("merge", result, details={"out": out}))
        except Exception as exc:
            from lora_tui.ui.app import _plain_error

            self.post_message(ExportDone("merge", None, error=_plain_error(exc)))

    @on(WorkProgress)
    def _progress(self, message: WorkProgress) -> None:
        if message.source == "merge" and self._busy:
            pct = f" {message.fraction:.0%}" if message.fraction else ""
            self.query_one("#export-result", Static).update(f"Merging: {message.text}{pct}")

    def action_modelfile(self) -> None:
        if self._refuse():
            return
        modelfile = self._merged / "Modelfile" if self._merged else None
        if modelfile is None or not modelfile.is_file():
            self.notify("The Ollama Modelfile is written with the merged model: press m to merge first.",
                        timeout=6)
            return
        self._show_modelfile(modelfile)

    def _show_modelfile(self, modelfile: Path) -> None:
        try:
            body = modelfile.read_text(encoding="utf-8")
        except OSError as exc:
            body = f"cannot read {modelfile}: {exc.strerror}"
        self.query_one("#export-text", Static).update(Text.assemble(
            (f"{modelfile}\n", "bold"), (f"Use it: cd {modelfile.parent} && ollama create my-model -f Modelfile\n\n",
                                         "dim"), body))

    @on(ExportDone)
    def _done(self, message: ExportDone) -> None:
        if message.what == "summary":
            self._show_summary(message.result, message.error)
            return
        self._busy = False
        result = self.query_one("#export-result", Static)
        if message.error:
            result.update(Text(f"✗ {message.error}", style="bold red"))
            return
        if message.what == "zip":
            path = Path(str(message.result))
            result.update(Text(f"✓ Zipped: {path} ({_size(path)})", style="bold green"))
        elif message.what == "merge":
            out = Path(getattr(message.result, "path", None) or message.details.get("out"))
            self._merged = out
            result.update(Text(f"✓ Merged model: {out} ({_size(out)}). o: show its Ollama Modelfile",
                               style="bold green"))
            if (out / "Modelfile").is_file():
                self._show_modelfile(out / "Modelfile")

    def next_refusal(self) -> str | None:
        return "This is the last step. ctrl+q quits; ctrl+b goes back."
