"""The wizard app: seven steps (model, hardware, dataset, parameters, training,
chat, export), one shared ``WizardState``, and the workers whose results more
than one screen shows (hardware probe, memory verdict, model layers).

Each step is a Textual mode, so a screen keeps its widgets when the user moves
on and comes back; the choices themselves live in ``app.state``. Nothing here
imports torch: heavy work happens in thread workers via ``app.backend``.
"""

from __future__ import annotations

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.worker import Worker

from lora_tui.core.config import set_training_data
from lora_tui.core.paths import runs_dir
from lora_tui.core.run.runs import STATES_ACTIVE, quoted
from lora_tui.ui.backend import Backend
from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ActiveRuns, DataMeasured, HardwareProbed, LinearLayersFound, PlanJudged
from lora_tui.ui.state import WizardState
from lora_tui.ui.steps import STEP_NAMES, STEPS, Step
from lora_tui.ui.workers import failure, thread_worker


def _screen_factory(step: Step):
    def make():  # a step's screen module is imported when the step is first shown (tests/test_import_layers.py sees it)
        import importlib

        return getattr(importlib.import_module(step.module), step.screen)()

    return make


class LoraTuiApp(App[int]):
    TITLE = "lora-tui"
    SUB_TITLE = "LoRA fine-tuning wizard"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("ctrl+n", "next_step", "Next"),
        Binding("ctrl+b", "previous_step", "Back"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Plain q too, where no text field has the focus (fields take it as a letter).
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, model: str | None = None, data: str | None = None, run: str | None = None, *,
                 backend: Backend | None = None, state: WizardState | None = None) -> None:
        super().__init__()
        self.state = state or WizardState()
        if model:
            self.state.config.model.name = model
        if data:
            set_training_data(self.state.config, data)
        self.backend = backend or Backend()
        self.initial_run = run
        self.judgement: PlanJudged | None = None
        self._judge_timer = None
        self._measuring: tuple | None = None  # the dataset_key whose lengths a worker is reading
        for step in STEPS:
            self.add_mode(step.name, _screen_factory(step))

    # --- start-up --------------------------------------------------------------------------
    def on_mount(self) -> None:
        first = "model"
        if self.initial_run:
            from lora_tui.core.run.runs import RunDirectory, RunError

            try:
                self.state.run = RunDirectory.find(self.initial_run)
                first = "training"
            except RunError as exc:
                self.notify(str(exc), title="No such run", severity="error", timeout=10)
        self.switch_mode(first)
        # After the first paint: nothing here may delay the screen.
        self.call_after_refresh(self.probe_hardware)
        if not self.initial_run:
            self.call_after_refresh(self.find_active_runs, str(runs_dir(self.state.config.output.runs_dir)))

    # --- navigation ------------------------------------------------------------------------
    def step_names(self) -> list[str]:
        return list(STEP_NAMES)

    def goto(self, step: str) -> None:
        if isinstance(self.screen, ModalScreen) or step == self.current_mode:
            return
        self.switch_mode(step)

    def action_goto(self, step: str) -> None:
        self.goto(step)

    def action_next_step(self) -> None:
        from lora_tui.ui.screens.base import WizardScreen

        screen = self.screen
        if not isinstance(screen, WizardScreen):
            return
        reason = screen.next_refusal()
        if reason:
            self.notify(reason, title="Not yet", severity="warning", timeout=8)
            return
        screen.go_next()

    def action_previous_step(self) -> None:
        names = self.step_names()
        if isinstance(self.screen, ModalScreen) or self.current_mode not in names:
            return
        index = names.index(self.current_mode)
        if index > 0:
            self.goto(names[index - 1])

    def next_step_name(self) -> str | None:
        names = self.step_names()
        index = names.index(self.current_mode) if self.current_mode in names else -1
        return names[index + 1] if 0 <= index < len(names) - 1 else None

    # --- quitting: a running trainer goes on detached, after asking ------------------------
    async def action_quit(self) -> None:
        run = self.state.run
        if run is not None and run.state() in STATES_ACTIVE:
            from lora_tui.ui.screens.dialogs import QuitDuringTraining

            self.push_screen(QuitDuringTraining(str(run.path)), self._quit_answered)
            return
        self.exit(0)

    def _quit_answered(self, answer: str | None) -> None:
        run = self.state.run
        if answer == "detach":
            self.detach()
        elif answer == "stop":
            self.backend.stop_run(run)
            self.exit(0, message=f"Stop requested: the trainer saves a checkpoint and the adapter, then ends.\n"
                                 f"Follow it: lora-tui attach {quoted(run.path)}")

    def detach(self) -> None:
        run = self.state.run
        self.exit(0, message=f"Training goes on in the background.\nFollow it:   lora-tui attach {quoted(run.path)}\n"
                             f"Reopen it:   lora-tui --run {quoted(run.path)}\nStop it:     lora-tui stop {quoted(run.path)}")

    # --- shared workers ---------------------------------------------------------------------
    def notify_screens(self, what: str) -> None:
        """Tell the visible step that shared state changed (hidden steps re-read state when shown)."""
        from lora_tui.ui.screens.base import WizardScreen

        for screen in self.screen_stack:
            # A screen still composing will read the state when it is shown.
            if isinstance(screen, WizardScreen) and screen.composed:
                screen.state_changed(what)

    @thread_worker("hardware")
    def probe_hardware(self, check_libraries: bool = False) -> None:
        """GPUs and RAM take milliseconds and are all a memory verdict needs. The library check
        (torch, CUDA, a bitsandbytes round trip) takes seconds of CPU, so it runs only for the
        Hardware step, never while the wizard merely watches a run train."""
        self.post_message(HardwareProbed(self.backend.probe_hardware(check_libraries=check_libraries)))

    @on(HardwareProbed)
    def _hardware_probed(self, message: HardwareProbed) -> None:
        if message.report is not None:
            self.state.hardware = message.report
        self.notify_screens("hardware")
        self.request_judgement()

    @thread_worker("runs")
    def find_active_runs(self, runs_dir: str) -> None:
        """Reopening the wizard while a run trains: say so, and where to watch it (a failure only means no note)."""
        active = self.backend.active_runs(runs_dir)
        if active:
            self.post_message(ActiveRuns([f"{r.name} (step {r.step or 0}/{r.max_steps or '?'})" for r in active]))

    @on(ActiveRuns)
    def _active_runs(self, message: ActiveRuns) -> None:
        self.notify(f"Training now: {', '.join(message.lines[:3])}. The Training step lists it (Enter opens it); "
                    "or: lora-tui --run runs/NAME", title="A run is training", timeout=12)

    def plan_key(self) -> tuple:
        from lora_tui.core.plan.workload import estimate_inputs

        return (*estimate_inputs(self.state.config), id(self.state.hardware), self.state.longest_row())

    def request_judgement(self) -> None:
        """Re-estimate memory for the current plan, debounced so typing does not queue estimates. The plan
        waits for the data's longest row (as the trainer plans with it): one figure, never a first one at
        rows of max_seq_len that changes once the data is read."""
        if self.state.hardware is None:
            return
        if self._judge_timer is not None:
            self._judge_timer.stop()
        self._judge_timer = self.set_timer(0.15, self._judge_when_measured)

    def _judge_when_measured(self) -> None:
        if self.state.lengths() is not None:
            self.judge_plan(self.plan_key())
            return
        key = self.state.dataset_key()
        if self._measuring != key:
            self._measuring = key
            self.measure_data(key, self.state.config.copy())

    @thread_worker("lengths")
    def measure_data(self, key: tuple, config) -> None:
        self.post_message(DataMeasured(key, self.backend.data_lengths(config)))

    @on(DataMeasured)
    def _data_measured(self, message: DataMeasured) -> None:
        if self._measuring == message.key:
            self._measuring = None
        self.state.data_lengths = (message.key, message.lengths)
        if message.key == self.state.dataset_key():
            self.request_judgement()
        else:  # the data changed meanwhile: measure that
            self._judge_when_measured()

    @thread_worker("judge")
    def judge_plan(self, key: tuple) -> None:
        config, longest = self.state.config.copy(), key[-1]  # the data's longest row, once it is checked
        estimate, verdict = self.backend.judge(config, self.state.hardware, longest)
        self.post_message(PlanJudged(key, verdict, estimate, batch=self.backend.batch(config, self.state.hardware, longest)))

    @on(PlanJudged)
    def _plan_judged(self, message: PlanJudged) -> None:
        if message.key != self.plan_key():
            return  # a newer plan is on its way
        self.judgement = message
        self.notify_screens("judgement")

    def current_judgement(self) -> PlanJudged | None:
        j = self.judgement
        return j if j is not None and j.key == self.plan_key() else None

    def request_layers(self) -> None:
        name = self.state.config.model.name
        if name not in self.state.linear_layers and name not in self.state.layer_errors:
            self.find_layers(name, self.state.config.model.trust_remote_code)

    @thread_worker("layers")
    def find_layers(self, name: str, trust_remote_code: bool) -> None:
        self.post_message(LinearLayersFound(name, self.backend.linear_layers(name, trust_remote_code)))

    @on(LinearLayersFound)
    def _layers_found(self, message: LinearLayersFound) -> None:
        if message.layers is not None:
            self.state.linear_layers[message.name] = message.layers
        else:
            self.state.layer_errors[message.name] = message.error or "unknown error"
        self.notify_screens("layers")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The app's workers that raised: each group's message, with the error the screens show."""
        failed = failure(event)
        if failed is None:
            return
        exc, call = failed.error, failed.args
        if failed.group == "hardware":  # the probe promises no exceptions; a bug must not kill the wizard
            self.post_message(HardwareProbed(None, error=f"{type(exc).__name__}: {exc}"))
        elif failed.group == "judge":
            self.post_message(PlanJudged(call["key"], None, error=plain_error(exc)))
        elif failed.group == "layers":
            self.post_message(LinearLayersFound(call["name"], None, error=plain_error(exc)))
        elif failed.group == "lengths":  # e.g. no tokenizer: the plan assumes max_seq_len and says why
            from lora_tui.core.train.data_lengths import DataLengths

            self.post_message(DataMeasured(call["key"], DataLengths(None, plain_error(exc))))


def make_app(model: str | None = None, data: str | None = None, run: str | None = None, **options) -> LoraTuiApp:
    """The one factory the CLI and the tests use. ``options`` go to LoraTuiApp (backend=, state=)."""
    return LoraTuiApp(model=model, data=data, run=run, **options)
