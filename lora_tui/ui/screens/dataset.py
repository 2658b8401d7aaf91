"""Step 3, Dataset: pick a file, see its detected format, rows rendered exactly as
the model will see them (trained tokens highlighted), the validation findings
grouped with their line numbers and fixes (wrapped, never cut), the token-length
histogram with the truncation cut, and the validation split; ctrl+t goes from tab
to tab wherever the focus is. Moving on is refused, with the reason, when no row
is valid or every label is masked; rows with errors are skipped, and the verdict
says how many.

Validation runs in a thread worker (it loads the tokenizer); the screen only draws.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static, TabbedContent, TabPane
from textual.worker import Worker

from lora_tui.core.config import set_training_data
from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import DatasetChecked, WorkProgress
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import FilePicker
from lora_tui.ui.widgets.dataset_views import findings_text, histogram_text, preference_lengths_text, \
    preference_preview_text, preview_text
from lora_tui.ui.workers import failure, thread_worker


class DatasetScreen(WizardScreen):
    STEP = "dataset"
    BINDINGS = [Binding("ctrl+o", "browse", "Browse"), Binding("ctrl+r", "revalidate", "Re-check"),
                Binding("ctrl+t", "next_tab", "Next tab")]
    TABS = ("tab-preview", "tab-findings", "tab-lengths")

    def __init__(self) -> None:
        super().__init__()
        self._checking: tuple | None = None
        self._error: str | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="dataset-body", classes="body"):
            with Horizontal(classes="row"):
                yield Label("Training file ", classes="field-name")
                yield Input(id="data-path", compact=True, placeholder="path to .jsonl/.json/.csv/.parquet, a folder, or a hub id org/name[:split]")
            yield Static(id="data-summary")
            yield Static(id="data-verdict")
            with TabbedContent(id="data-tabs"):
                with TabPane("Preview", id="tab-preview"):
                    with VerticalScroll():
                        yield Static(id="preview")
                with TabPane("Findings", id="tab-findings"):
                    with VerticalScroll(id="findings"):
                        yield Static(id="findings-text")
                with TabPane("Lengths", id="tab-lengths"):
                    with VerticalScroll():
                        yield Static(id="histogram")

    def action_next_tab(self) -> None:
        tabs = self.query_one("#data-tabs", TabbedContent)
        tabs.active = self.TABS[(self.TABS.index(tabs.active) + 1) % len(self.TABS)] if tabs.active in self.TABS \
            else self.TABS[0]

    # --- state -------------------------------------------------------------------------------
    def sync_from_state(self) -> None:
        path_input = self.query_one("#data-path", Input)
        if path_input.value != self.state.config.data.train:
            with path_input.prevent(Input.Changed):
                path_input.value = self.state.config.data.train
        view = self.state.dataset_current()
        if view is not None:
            self._show(view)
        elif self._checking != self.state.dataset_key():
            self.validate()

    def validate(self) -> None:
        key = self.state.dataset_key()
        self._checking, self._error = key, None
        self.query_one("#data-verdict", Static).update("[yellow]Checking the dataset…[/]")
        self._validate(self.state.config.copy(), key)

    @thread_worker("dataset")
    def _validate(self, config, key: tuple) -> None:
        def progress(text: str, fraction: float) -> None:
            self.post_message(WorkProgress("dataset", text, fraction))

        progress("Loading the tokenizer", 0.0)
        view = self.backend.validate(config, on_progress=progress)
        view.key = key
        self.post_message(DatasetChecked(key, view))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The check raised (a DataError names the line and the fix): shown as the check's result."""
        failed = failure(event)
        if failed is not None and failed.group == "dataset":
            self.post_message(DatasetChecked(failed.args["key"], None, error=plain_error(failed.error)))

    @on(WorkProgress)
    def _progress(self, message: WorkProgress) -> None:
        if message.source == "dataset" and self._checking is not None:
            pct = f" {message.fraction:.0%}" if message.fraction else ""
            self.query_one("#data-verdict", Static).update(f"[yellow]Checking the dataset: {message.text}{pct}…[/]")

    @on(DatasetChecked)
    def _checked(self, message: DatasetChecked) -> None:
        if message.key != self.state.dataset_key():
            return  # the user picked another file meanwhile
        self._checking = None
        if message.error:
            self._error = message.error
            self.state.dataset = None
            self._show_error(message.error)
            return
        self.state.dataset = message.view
        method = getattr(message.view, "method", None)
        if method and method != self.state.config.training.method:  # the rows decide: pairs are dpo / kto data
            self.state.config.training.method = method
        self._show(message.view)
        self.app.request_judgement()  # the plan now knows the data's longest row

    # --- drawing -----------------------------------------------------------------------------
    def _show_error(self, error: str) -> None:
        self.query_one("#data-summary", Static).update("")
        self.query_one("#data-verdict", Static).update(Text(f"✗ {error}", style="bold red"))
        self.query_one("#preview", Static).update("")
        self.query_one("#histogram", Static).update("")
        self.query_one("#findings-text", Static).update("")

    def _show(self, view) -> None:
        report = view.report
        errors, warnings = len(report.errors), len(report.warnings)
        summary = Text()
        summary.append(f"{report.format}", style="bold")
        summary.append(f" ({report.container})  ")
        summary.append(f"{report.valid_rows} of {report.rows} rows valid  ")
        summary.append(f"{errors} errors  ", style="red" if errors else "dim")
        summary.append(f"{warnings} warnings  ", style="yellow" if warnings else "dim")
        summary.append(f"{report.trained_tokens:,} trained tokens", style="dim")
        if report.preference is not None:
            summary.append(f"\nPreference data: trains with training.method={view.method}", style="bold")
        summary.append(f"\nTemplate: {report.template or '?'}   Validation: {view.validation_note}", style="dim")
        self.query_one("#data-summary", Static).update(summary)
        refusal = view.refusal()
        verdict = self.query_one("#data-verdict", Static)
        skipped = report.rows - report.valid_rows
        if refusal:
            verdict.update(Text(f"✗ Cannot train on this: {refusal}", style="bold red"))
            if report.findings:
                self.query_one("#data-tabs", TabbedContent).active = "tab-findings"  # what the message points at
        elif skipped > 0:  # trains, but not on every row: say so, not a green "ready"
            verdict.update(Text(f"! {report.valid_rows} usable, {skipped} skipped (errors: Findings, ctrl+t). "
                                "ctrl+n: parameters", style="bold yellow"))
        else:
            verdict.update(Text("✓ Ready to train. ctrl+n: parameters", style="bold green"))
        from lora_tui.core.data.records import row_unit

        unit = row_unit(report.container, report.source)  # a hub dataset's rows, a JSON array's elements: "row"
        if report.preference is not None:  # dpo / kto: the prompt, then each answer as scored
            self.query_one("#preview", Static).update(preference_preview_text(view.preview, unit))
            lengths = preference_lengths_text(report.preference)
            lengths.append_text(histogram_text(report.token_stats))
            self.query_one("#histogram", Static).update(lengths)
        else:
            self.query_one("#preview", Static).update(preview_text(view.preview, unit))
            self.query_one("#histogram", Static).update(histogram_text(report.token_stats))
        self.query_one("#findings-text", Static).update(findings_text(report.findings, unit))

    # --- choosing a file -----------------------------------------------------------------------
    @on(Input.Submitted, "#data-path")
    def _typed(self, event: Input.Submitted) -> None:
        self.use_path(event.value.strip())

    def use_path(self, path: str) -> None:
        if not path:
            return
        set_training_data(self.state.config, path)  # another file: its own held-out rows, not the old validation file
        with self.query_one("#data-path", Input).prevent(Input.Changed):
            self.query_one("#data-path", Input).value = path
        self.validate()

    def action_browse(self) -> None:
        current = self.state.config.data.train
        from lora_tui.core.paths import resolve_data_path

        start = resolve_data_path(current).parent if current else Path(".")
        self.app.push_screen(FilePicker(start if start.is_dir() else Path("."), current),
                             lambda path: self.use_path(path) if path else None)

    def action_revalidate(self) -> None:
        self.use_path(self.query_one("#data-path", Input).value.strip() or self.state.config.data.train)

    def next_refusal(self) -> str | None:
        typed = self.query_one("#data-path", Input).value.strip()
        if typed and typed != self.state.config.data.train:
            return "Press Enter in the path field to check the new file first."
        if self._error:
            return self._error
        view = self.state.dataset_current()
        if view is None:
            return "Still checking the dataset…"
        return view.refusal()
