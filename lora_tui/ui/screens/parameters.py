"""Step 4, Parameters: every Config field with its help, presets, target
modules from the model's actual linear layers, the memory estimate and verdict as
values change, save / load YAML, the equivalent `lora-tui train` command, and the
key that starts training.

A typed value is checked with ``check_value`` where it is typed: a refused value
is marked with its reason and never reaches the Config. Starting validates the
dataset first when it changed, in a worker, then calls the launcher.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, Select, Static
from textual.worker import Worker

from lora_tui.core.config import PRESET_HELP, PRESETS, SECTION_HELP, TARGET_CHOICES, ConfigError, apply_preset, \
    check_value, load_config, save_config
from lora_tui.core.config import matching_preset, set_training_data, train_command
from lora_tui.core.run.runs import STATES_ACTIVE
from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import DatasetChecked, RunStarted
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import Confirm, PathPrompt
from lora_tui.ui.widgets.fields import FieldRow
from lora_tui.ui.widgets.format import gib, verdict_markup
from lora_tui.ui.workers import failure, thread_worker

PRESET_LABELS = {"lora": "LoRA (16-bit base)", "qlora": "QLoRA (4-bit base)", "lora-8bit": "LoRA on an 8-bit base"}
CUSTOM = "custom"
AUTO_SHOWN = ("auto", "on", "off")  # a true / false / auto (None) field shown as a choice


def _auto_shown(value) -> str:
    return "auto" if value is None else "on" if value else "off"
# What people tune here first; the model and data were chosen on the steps before.
FORM_ORDER = ("lora", "training", "data", "output", "model")


class ParametersScreen(WizardScreen):
    STEP = "parameters"
    BINDINGS = [
        Binding("ctrl+n", "start", "Start training"),
        Binding("ctrl+s", "save", "Save YAML"),
        Binding("ctrl+o", "load", "Load YAML"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._saved: tuple[str, dict] | None = None  # (path, config dict) of the last save/load
        self._starting = False

    def compose_body(self) -> ComposeResult:
        config = self.state.config
        with Vertical(id="parameters-body", classes="body"):
            with Horizontal(id="preset-row", classes="row"):
                yield Label("Preset ", classes="field-name")
                yield Select([(PRESET_LABELS[p], p) for p in PRESETS] + [("custom", CUSTOM)], value=CUSTOM,
                             allow_blank=False, compact=True, id="preset")
            yield Static(id="preset-help")  # below the choice, the full width: 2 lines at 80 columns, not 4
            # Not a Tab stop itself: Tab goes field to field, and the focused field scrolls into view.
            with VerticalScroll(id="form", can_focus=False):
                for section in FORM_ORDER:
                    help_text = SECTION_HELP[section]
                    yield Static(Text.assemble((section, "bold"), "  ", (help_text, "dim")),
                                 classes="section-title" + (" first" if section == FORM_ORDER[0] else ""))
                    for key, value in vars(getattr(config, section)).items():
                        choices = TARGET_CHOICES + (CUSTOM,) if (section, key) == ("lora", "targets") else None
                        shown = value
                        if choices and value not in TARGET_CHOICES:
                            shown = CUSTOM
                        if (section, key) == ("training", "gradient_checkpointing"):
                            choices, shown = AUTO_SHOWN, _auto_shown(value)
                        yield FieldRow(section, key, shown, choices=choices)
                        if (section, key) == ("lora", "targets"):
                            custom = FieldRow("lora", "targets", value if shown == CUSTOM else "", custom=True)
                            custom.display = shown == CUSTOM
                            yield custom
            with Vertical(id="plan-panel"):
                yield Static(id="memory-line")
                yield Static(id="engine-line")
                yield Static(id="batch-line")
                yield Static(id="command-line")

    # --- showing state ------------------------------------------------------------------------
    def sync_from_state(self) -> None:
        config = self.state.config
        for row in self.query(FieldRow):
            value = getattr(getattr(config, row.section), row.key)
            if row.dotted == "lora.targets":
                if row.custom:
                    row.display = value not in TARGET_CHOICES
                    row.show_value(value if value not in TARGET_CHOICES else "")
                else:
                    row.show_value(value if value in TARGET_CHOICES else CUSTOM)
            else:
                row.show_value(_auto_shown(value) if row.dotted == "training.gradient_checkpointing" else value)
        self._show_preset()
        self._show_targets()
        self._show_judgement()
        self._show_command()
        self.app.request_layers()
        self.app.request_judgement()

    def state_changed(self, what: str) -> None:
        if what in ("judgement", "hardware"):
            self._show_judgement()
        elif what == "layers":
            self._show_targets()

    def _show_preset(self) -> None:
        preset = matching_preset(self.state.config) or CUSTOM
        select = self.query_one("#preset", Select)
        with select.prevent(Select.Changed):
            select.value = preset
        help_text = PRESET_HELP.get(preset, "Your own mix of values; pick a preset to start from one.")
        self.query_one("#preset-help", Static).update(Text(help_text))

    def _show_targets(self) -> None:
        layers = self.state.layers_for_model()
        targets = self.state.config.lora.targets
        row = self.query_one("#field-lora-targets", FieldRow)
        if layers is None:
            error = self.state.layer_errors.get(self.state.config.model.name)
            row.set_note(f"layers unknown ({error}); checked when training starts" if error
                         else "Finding the model's linear layers…")
            return
        from lora_tui.core.model.models import ModelSourceError, resolve_target_modules

        try:
            chosen = resolve_target_modules(targets, layers)
            row.set_note(f"→ {', '.join(chosen)}  (of {len(layers)}: {', '.join(layers)})")
        except ModelSourceError as exc:
            row.set_note(None)
            row.set_error(str(exc))

    def _show_judgement(self) -> None:
        self._show_engine()
        line = self.query_one("#memory-line", Static)
        if self.state.hardware is None:
            line.update("Memory: probing the hardware…")
            return
        judgement = self.app.current_judgement()
        if judgement is None:
            line.update("Memory: estimating" + (" (reading the data's row lengths)" if self.state.lengths() is None
                                                else "") + "…")
        elif judgement.error:
            line.update(f"[yellow]Memory: no estimate ({judgement.error})[/]")
        else:
            v = judgement.verdict
            line.update(f"{verdict_markup(v.verdict)}  needs [b]{gib(v.estimate.total_bytes)}[/] of "
                        f"{gib(v.available_bytes)} free on {escape(v.device_label)}"
                        + ("  [dim](fixes: Hardware step)[/]" if v.verdict != "fits" else ""))

    def _show_engine(self) -> None:
        """What `auto` resolves to on this hardware (batch, checkpointing, batching, attention, kernels) and why."""
        line, batch_line = self.query_one("#engine-line", Static), self.query_one("#batch-line", Static)
        hardware = self.state.hardware
        if hardware is None:
            line.update("")
            batch_line.update("")
            return
        from lora_tui.core.plan.engine_choice import DeviceFacts, choose_kernels, engine_fields

        t = self.state.config.training
        try:
            facts = DeviceFacts.from_hardware(hardware)  # the facts the trainer plans with (compute capability, kernels)
            attention, batching, _ = engine_fields(self.state.config, facts)
            kernels, _ = choose_kernels(t.kernels, facts.device, liger=facts.liger)
        except Exception as exc:  # an engine choice must never break the form
            line.update(Text(f"Engine: not decided ({exc})", style="yellow"))
            return
        judgement = self.app.current_judgement()
        batch = judgement.batch if judgement is not None else None  # decided with the estimate, off the UI thread
        ckpt = ("…" if batch is None else "on" if batch.gradient_checkpointing else "off")
        why = batch.reasons.get("gradient_checkpointing", "") if batch is not None else ""
        line.update(Text.assemble(("Engine: ", "dim"), (batching, "bold"), (" · ", "dim"), (attention, "bold"),
                                  (" · ", "dim"), ("+".join(kernels), "bold"), (" · checkpointing ", "dim"),
                                  (ckpt, "bold"), (f" ({why.split(': ', 1)[-1]})" if why else "", "dim")))
        if batch is None:
            batch_line.update(Text("Batch: deciding…", style="dim"))
            return
        why = batch.reasons.get("micro_batch", "")
        size, per_step = batch.describe().split(" = ")  # '8 x 4', '32 rows per step' (core/plan/batch.py)
        batch_line.update(Text.assemble(("Batch: ", "dim"), ("auto → " if t.micro_batch is None else "", "dim"),
                                        (size, "bold"), (f" = {per_step}", ""),
                                        (f" ({why.removeprefix('auto: ')})" if t.micro_batch is None else "", "dim")))

    def _show_command(self) -> None:
        config = self.state.config
        path = self._saved[0] if self._saved and self._saved[1] == config.to_dict() else None
        command = train_command(config, path)
        self.query_one("#command-line", Static).update(Text.assemble(("$ ", "dim"), (command, "bold")))

    # --- editing ------------------------------------------------------------------------------
    @on(FieldRow.Edited)
    def _edited(self, event: FieldRow.Edited) -> None:
        row, config = event.row, self.state.config
        value = event.value
        if row.dotted == "lora.targets" and not row.custom:
            custom_row = self.query_one("#field-lora-targets-custom", FieldRow)
            custom_row.display = value == CUSTOM
            if value == CUSTOM:
                custom_row.editor.focus()
                return
        try:
            checked = check_value(row.section, row.key, value)
            if row.dotted == "lora.targets" and checked not in TARGET_CHOICES:
                # A list being typed: "q_proj," is q_proj, not a new module named "".
                checked = check_value(row.section, row.key,
                                      ",".join(part.strip() for part in checked.split(",") if part.strip()))
            if row.dotted == "lora.targets" and self.state.layers_for_model() is not None:
                from lora_tui.core.model.models import resolve_target_modules

                resolve_target_modules(checked, self.state.layers_for_model())
        except (ConfigError, Exception) as exc:  # ModelSourceError for unknown module names
            row.set_error(str(exc))
            return
        row.set_error(None)
        if getattr(getattr(config, row.section), row.key) != checked:
            if row.dotted == "data.train":  # its validation file goes with the old data (set_training_data)
                set_training_data(config, checked)
                self.query_one("#field-data-validation", FieldRow).show_value(config.data.validation)
            else:
                setattr(getattr(config, row.section), row.key, checked)
            self.config_changed(row.dotted)

    def config_changed(self, dotted: str = "") -> None:
        if dotted.startswith("model."):
            self.state.model_check = None  # the model step checks the new one
            self.app.request_layers()
        self._show_preset()
        self._show_targets()
        self._show_command()
        self.app.request_judgement()
        self._show_judgement()

    @on(Select.Changed, "#preset")
    def _preset(self, event: Select.Changed) -> None:
        if event.value in PRESETS:
            apply_preset(self.state.config, event.value)
            self.sync_from_state()

    def invalid_fields(self) -> list[FieldRow]:
        return [row for row in self.query(FieldRow) if row.error and row.display]

    # --- save / load ----------------------------------------------------------------------------
    def action_save(self) -> None:
        default = self.state.config_path or "lora-tui.yaml"

        def chosen(path: str | None) -> None:
            if not path:
                return
            if Path(path).expanduser().exists():
                self.app.push_screen(Confirm("Replace the file?", f"{path} exists. Replace it with this config?",
                                             yes="Replace", danger=True),
                                     lambda yes: self._save(path) if yes else None)
            else:
                self._save(path)

        self.app.push_screen(PathPrompt("Save the config as YAML", default,
                                        "Commented YAML; train it headless with `lora-tui train PATH`."), chosen)

    def _save(self, path: str) -> None:
        try:
            save_config(self.state.config, Path(path).expanduser())
        except OSError as exc:
            self.notify(f"Cannot write {path}: {exc.strerror}.", severity="error")
            return
        self.state.config_path = path
        self._saved = (path, self.state.config.to_dict())
        self._show_command()
        self.notify(f"Saved {path}", timeout=4)

    def action_load(self) -> None:
        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                loaded = load_config(Path(path).expanduser())
            except ConfigError as exc:
                self.notify(str(exc), title="Config not loaded", severity="error", timeout=12)
                return
            self.state.config = loaded
            self.state.config_path = path
            self.state.model_check = None
            self._saved = (path, loaded.to_dict())
            self.sync_from_state()
            self.notify(f"Loaded {path}", timeout=4)

        self.app.push_screen(PathPrompt("Load a config YAML", self.state.config_path or "", must_exist=True), chosen)

    # --- starting -------------------------------------------------------------------------------
    def next_refusal(self) -> str | None:
        run = self.state.run
        if run is not None and run.state() in STATES_ACTIVE:
            return None  # a run is going: ctrl+n just shows it
        bad = self.invalid_fields()
        if bad:
            return f"{bad[0].dotted}: {bad[0].error}"
        check = self.state.model_check
        if check is not None and not check.ok:
            return f"The model cannot be used: {check.message}"
        if self._starting:
            return "Starting…"
        return None

    def action_start(self) -> None:
        reason = self.next_refusal()
        if reason:
            self.notify(reason, title="Not yet", severity="warning", timeout=8)
            return
        run = self.state.run
        if run is not None and run.state() in STATES_ACTIVE:
            self.app.goto("training")
            return
        self._starting = True
        self.query_one("#memory-line", Static).update("Checking the dataset and starting the trainer…")
        self._start(self.state.config.copy(), self.state.dataset_key(), self.state.dataset_current() is None)

    @thread_worker("start")
    def _start(self, config, key: tuple, validate: bool) -> None:
        if validate:
            view = self.backend.validate(config)
            view.key = key
            self.post_message(DatasetChecked(key, view))
            refusal = view.refusal()
            if refusal:  # the data refused: a result, not a failure
                self.post_message(RunStarted(None, error=refusal))
                return
        elif self.state.dataset.refusal():
            self.post_message(RunStarted(None, error=self.state.dataset.refusal()))
            return
        self.post_message(RunStarted(self.backend.start_run(config)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Starting raised (the check or the launcher): the run did not start, and the reason is shown."""
        failed = failure(event)
        if failed is not None and failed.group == "start":
            self.post_message(RunStarted(None, error=plain_error(failed.error)))

    @on(DatasetChecked)
    def _dataset_checked(self, message: DatasetChecked) -> None:
        if message.view is not None:
            self.state.dataset = message.view
            self.app.request_judgement()  # the plan now knows the data's longest row

    @on(RunStarted)
    def _run_started(self, message: RunStarted) -> None:
        self._starting = False
        self._show_judgement()
        if message.error:
            self.notify(message.error, title="Training not started", severity="error", timeout=15)
            return
        self.state.run = message.run
        self.app.notify_screens("run")
        self.app.goto("training")
