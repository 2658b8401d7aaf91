"""Step 1, Model: the embedded default first, the catalogue with parameter counts, the
memory each would need with the current plan and the steps of the flow its family has
passed (the family matrix), and free entry of a hub id or a
local path, checked before the user moves on. trust_remote_code stays off unless
the user ticks it and confirms a warning.

The check and the estimates run in thread workers (they import transformers).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, DataTable, Input, Label, Static
from textual.worker import Worker

from rich.markup import escape

from lora_tui.core.export.family_support import steps_cell, steps_line
from lora_tui.core.model.catalogue import model_dims
from lora_tui.core.model.embedded import EMBEDDED_MODEL, is_embedded
from lora_tui.ui.messages import CatalogueEstimated, ModelChecked
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.widgets.tick import Tick
from lora_tui.ui.screens.dialogs import Confirm
from lora_tui.ui.widgets.format import count, gib, verdict_markup
from lora_tui.ui.workers import failure, thread_worker

EMBEDDED_LABEL = "embedded: SmolLM2-135M-Instruct (offline)"
TRUST_WARNING = ("Trusting remote code runs Python files shipped with the model, with your permissions, "
                 "when it loads. Only do this for a model whose author you trust and whose code you have read.")


def _steps(name: str) -> str:
    """The Steps cell: "all 8" / "no GGUF" / "untested" for the model's family (core/export/family_support.py)."""
    try:
        return steps_cell(model_dims(name).model_type)
    except (LookupError, ValueError):
        return "?"


class ModelScreen(WizardScreen):
    STEP = "model"

    def __init__(self) -> None:
        super().__init__()
        self._pending_next = False
        self._checking: str | None = None
        self._catalogue_key: tuple | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="model-body", classes="body"):
            yield Label("Which model do you want to adapt?  Enter on a row chooses it and moves on.",
                        classes="title")
            yield Static(id="plan-hint", classes="hint")
            table = DataTable(id="models", cursor_type="row", zebra_stripes=True)
            # Fixed widths for the numbers: auto widths only grow, so they would depend on update order.
            self._columns = [table.add_column("Model"), table.add_column("Params", width=6),
                             table.add_column("Needs", width=9), table.add_column("Fits", width=11),
                             table.add_column("Steps", width=8)]  # of the flow that work for its family
            yield table
            with Horizontal(id="model-entry", classes="row"):
                yield Label("Hub id or path ", classes="field-label")
                yield Input(placeholder="e.g. Qwen/Qwen2.5-0.5B-Instruct or ./my-model", id="model-input",
                            compact=True)
            yield Tick("Trust remote code (runs the model's own Python code)", id="trust", compact=True)
            yield Static(id="model-status", classes="status")

    # --- state ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        table = self.query_one("#models", DataTable)
        table.add_row(EMBEDDED_LABEL, "135M", "…", "…", _steps(EMBEDDED_MODEL), key=EMBEDDED_MODEL)

    def sync_from_state(self) -> None:
        config = self.state.config
        self.query_one("#trust", Checkbox).value = config.model.trust_remote_code
        name = config.model.name
        if not is_embedded(name) and self.query_one("#model-input", Input).value != name:
            self.query_one("#model-input", Input).value = name
        check = self.state.model_check
        if check is None or check.name != name and not (is_embedded(name) and is_embedded(check.name)):
            self.check_model(name)
        else:
            self._show_check(check)
        self.refresh_catalogue()

    def state_changed(self, what: str) -> None:
        if what in ("hardware", "judgement"):
            self.refresh_catalogue()

    def refresh_catalogue(self) -> None:
        c = self.state.config
        where = "GPU memory" if self.state.hardware is not None and self.state.hardware.gpus else "RAM"
        self.query_one("#plan-hint", Static).update(
            f"Needs: peak memory with the current plan ({c.model.load_in} base, r {c.lora.r}, micro-batch "
            f"{'auto' if c.training.micro_batch is None else c.training.micro_batch} x "
            f"{c.data.max_seq_len} tokens); Fits: in free {where}.")
        key = self.app.plan_key()[1:]  # the plan without the model name
        if self.state.hardware is None or self.state.lengths() is None or key == self._catalogue_key:
            return  # (no figure before the data's lengths are read: it would not be the one the run uses)
        self._catalogue_key = key
        self.estimate_catalogue(key)

    @thread_worker("catalogue")
    def estimate_catalogue(self, key: tuple) -> None:
        rows = self.backend.catalogue(self.state.config.copy(), self.state.hardware, self.state.longest_row())
        self.post_message(CatalogueEstimated(key, rows))

    @on(CatalogueEstimated)
    def _catalogue(self, message: CatalogueEstimated) -> None:
        table = self.query_one("#models", DataTable)
        if message.error:
            self.query_one("#model-status", Static).update(f"[yellow]Catalogue unavailable: {message.error}[/]")
            return
        rows = {EMBEDDED_MODEL if is_embedded(name) else name: (EMBEDDED_LABEL if is_embedded(name) else name,
                                                                count(params), gib(needed), verdict_markup(verdict),
                                                                _steps(name))
                for name, params, needed, verdict in message.rows}
        if [key.value for key in table.rows] == list(rows):  # same models: update in place, no flicker
            for key, cells in rows.items():
                for column, cell in zip(self._columns, cells):
                    table.update_cell(key, column, cell)
            return
        cursor = table.cursor_row
        table.clear()
        for key, cells in rows.items():
            table.add_row(*cells, key=key)
        table.move_cursor(row=min(cursor, table.row_count - 1))

    # --- choosing -----------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#models")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        self.choose(str(event.row_key.value), then_next=True)

    @on(Input.Submitted, "#model-input")
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.choose(event.value.strip(), then_next=True)

    def choose(self, name: str, then_next: bool = False) -> None:
        config = self.state.config
        if name != config.model.name:
            config.model.name = name
            self.app.request_judgement()
        self._pending_next = then_next
        self.check_model(name)

    @on(Checkbox.Changed, "#trust")
    def _trust(self, event: Checkbox.Changed) -> None:
        config = self.state.config
        if event.value == config.model.trust_remote_code:
            return
        if not event.value:
            config.model.trust_remote_code = False
            self.check_model(config.model.name)
            return

        def answered(yes: bool | None) -> None:
            config.model.trust_remote_code = bool(yes)
            self.query_one("#trust", Checkbox).value = bool(yes)
            if yes:
                self.check_model(config.model.name)

        self.app.push_screen(Confirm("Run the model's own code?", TRUST_WARNING, yes="Trust it", no="Keep off",
                                     danger=True), answered)

    def check_model(self, name: str) -> None:
        self._checking = name
        self.state.layer_errors.pop(name, None)  # a re-check may fix it (trust_remote_code, a new download)
        self.query_one("#model-status", Static).update(f"Checking {name} …")
        self._run_check(name, self.state.config.model.trust_remote_code)

    @thread_worker("model-check")
    def _run_check(self, name: str, trust_remote_code: bool) -> None:
        self.post_message(ModelChecked(name, self.backend.check_model(name, trust_remote_code)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """This screen's workers that raised: the catalogue says it is unavailable, the check says why."""
        failed = failure(event)
        if failed is None:
            return
        exc, call = failed.error, failed.args
        if failed.group == "catalogue":
            self.post_message(CatalogueEstimated(call["key"], [], error=str(exc)))
        elif failed.group == "model-check":  # check_model_source promises no exceptions; keep the wizard alive anyway
            from lora_tui.core.model.models import ModelCheck

            name = call["name"]
            self.post_message(ModelChecked(name, ModelCheck(False, "unknown", name, f"{type(exc).__name__}: {exc}")))

    @on(ModelChecked)
    def _checked(self, message: ModelChecked) -> None:
        if message.name != self.state.config.model.name:
            return
        self._checking = None
        self.state.model_check = message.check
        self._show_check(message.check)
        if message.check.ok:
            self.app.request_layers()
            if self._pending_next:
                self._pending_next = False
                self.go_next()
        self._pending_next = False

    def _show_check(self, check) -> None:
        status = self.query_one("#model-status", Static)
        if check.ok:
            lines = [f"[green]✓[/] [b]{check.name}[/]: {check.message}"]
            lines += [f"[yellow]! {w}[/]" for w in check.warnings]
            lines.append(escape(steps_line(check.model_type)))  # which steps of the flow its family has passed
        else:
            lines = [f"[red]✗ {check.message}[/]"]
        status.update("\n".join(lines))

    def next_refusal(self) -> str | None:
        if self._checking:
            return f"Still checking {self._checking}."
        check = self.state.model_check
        if check is None:
            return "Choose a model first."
        if not check.ok:
            return check.message
        return None
