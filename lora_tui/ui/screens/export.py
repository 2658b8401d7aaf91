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
from textual.widgets import Button, Markdown, Static

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ExportDone, WorkProgress
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import Confirm, PathPrompt
from lora_tui.ui.widgets.format import human_size


def _without_front_matter(card: str) -> str:
    """The model card without its YAML header (metadata for the hub, noise on screen)."""
    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end != -1:
            return card[end + 4:].lstrip()
    return card


class ExportScreen(WizardScreen):
    STEP = "export"
    BINDINGS = [Binding("z", "zip", "Zip"), Binding("m", "merge", "Merge"), Binding("o", "modelfile", "Modelfile")]

    def __init__(self) -> None:
        super().__init__()
        self._busy = False
        self._merged: Path | None = None
        self._shown_for: str | None = None
        self._detail_shown = False  # the detail panel shows a Modelfile: keep it over the model card
        self._summary_data: dict = {}

    def compose_body(self) -> ComposeResult:
        with Vertical(id="export-body", classes="body"):
            yield Static(id="export-where")
            with Horizontal(id="export-buttons", classes="row"):
                yield Button("Zip the adapter (z)", id="zip", compact=True)
                yield Button("Merge into a full model (m)", id="merge", compact=True)
                yield Button("Ollama Modelfile (o)", id="modelfile", compact=True)
            yield Static(id="export-result")
            with VerticalScroll(id="export-detail"):
                yield Markdown(id="export-card")
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
            self._detail_shown = False
            self.query_one("#export-result", Static).update("")
            self.query_one("#export-text", Static).update("")
            self.query_one("#export-card", Markdown).update("")
        where.update("Reading the run…")
        self._summary(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export-summary")
    def _summary(self, run) -> None:
        try:
            self.post_message(ExportDone("summary", self.backend.export_summary(run)))
        except Exception as exc:
            self.post_message(ExportDone("summary", None, error=plain_error(exc)))

    def _show_summary(self, summary: dict | None, error: str | None) -> None:
        run = self.state.run
        self._summary_data = summary or {}
        text = Text()
        if error or not summary or not summary.get("adapter"):
            text.append(f"No adapter in {run.adapter_dir} yet", style="bold yellow")
            text.append(f" ({error})" if error else ": it is written when training finishes or is stopped.")
            self.query_one("#export-where", Static).update(text)
            return
        adapter = Path(summary["adapter"])

        def row(label: str, value: str, style: str = "") -> None:
            text.append(f"{label:<12}", style="bold")
            text.append(value + "\n", style=style)

        row("Adapter", f"{adapter}  ({human_size(summary.get('adapter_bytes') or 0)}, "
                       f"{len(summary.get('adapter_files') or [])} files)")
        row("Model card", summary.get("model_card") or "none")
        row("Base model", str(summary.get("base_model")))
        if summary.get("zip"):
            row("Zip", f"{summary['zip']}  ({human_size(summary.get('zip_bytes') or 0)})")
        else:
            row("Zip", "not yet (z)", "dim")
        merged = summary.get("merged") or []
        for item in merged:
            row("Merged", f"{item['path']}  ({item.get('dtype')}, {human_size(item.get('bytes') or 0)})")
        if not merged:
            row("Merged", "not yet (m)", "dim")
        else:
            self._merged = Path(merged[-1]["path"])
        text.append("Load it     ", style="bold")
        text.append(f'PeftModel.from_pretrained(base_model, "{adapter}")', style="dim")
        self.query_one("#export-where", Static).update(text)
        card = summary.get("model_card")
        if card and not self._detail_shown:
            try:
                self.query_one("#export-card", Markdown).update(_without_front_matter(
                    Path(card).read_text(encoding="utf-8")[:20000]))
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
        existing = self._summary_data.get("zip")
        if existing:
            self.app.push_screen(Confirm("Replace the zip?", f"{existing} exists. Zip the adapter again over it?",
                                         yes="Replace"), lambda yes: self._start_zip(True) if yes else None)
        else:
            self._start_zip(False)

    def _start_zip(self, overwrite: bool) -> None:
        self._busy = True
        self.query_one("#export-result", Static).update("Zipping the adapter…")
        self._zip(self.state.run, overwrite)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _zip(self, run, overwrite: bool) -> None:
        try:
            self.post_message(ExportDone("zip", self.backend.zip_adapter(run, overwrite=overwrite)))
        except Exception as exc:
            self.post_message(ExportDone("zip", None, error=plain_error(exc)))

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
            self.post_message(ExportDone("merge", None, error=plain_error(exc)))

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
        self._detail_shown = True
        self.query_one("#export-card", Markdown).display = False
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
            result.update(Text(f"✓ Zipped: {path}", style="bold green"))
        elif message.what == "merge":
            out = Path(str(message.result or message.details.get("out")))
            self._merged = out
            result.update(Text(f"✓ Merged model: {out}. It loads with plain transformers.", style="bold green"))
            if (out / "Modelfile").is_file():
                self._show_modelfile(out / "Modelfile")
        self._summary(self.state.run)  # sizes and paths of what now exists

    def next_refusal(self) -> str | None:
        return "This is the last step. ctrl+q quits; ctrl+b goes back."
