"""Step 5, Training: follows a run directory live (or shows its full history).

A thread worker polls ``events.jsonl`` with ``RunDirectory.read_events_from`` twice
a second and posts only what is new, so the wizard costs the trainer next to
nothing; the screen folds events into a ``RunHistory`` and draws the loss plot,
progress with ETA, learning rate, tokens/s, the GPU (or CPU/RAM) panel and the
tail of train.log. Stopping asks the trainer to stop gracefully; detaching quits
the wizard and leaves the trainer running (it is its own process).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Static
from textual.worker import get_current_worker

from lora_tui.ui.messages import RunUpdate
from lora_tui.core.run.started import Started
from lora_tui.core.run.history import RunHistory
from lora_tui.core.run.runs import STATES_ACTIVE, STATES_DONE, quoted
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import Confirm
from lora_tui.ui.widgets.format import count, duration, gib, number
from lora_tui.ui.widgets.run_panels import LossPlot, now_panel, readable_log_line, system_panel
from lora_tui.ui.workers import thread_worker

POLL_SECONDS = 0.5
LOG_LINES = 4
ENDED = STATES_DONE + ("dead",)
ACTIVE = STATES_ACTIVE
STATE_STYLE = {"running": "green", "starting": "yellow", "created": "yellow", "stopping": "yellow",
               "finished": "bold green", "failed": "bold red", "stopped": "yellow", "dead": "bold red"}


def read_log_tail(path: Path, lines: int = LOG_LINES, max_bytes: int = 16384) -> list[str]:
    """The last lines of train.log; carriage-return progress bars keep only their latest redraw."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    out = [line.split("\r")[-1].rstrip() for line in data.split("\n")]
    return [line for line in out if line.strip()][-lines:]


def memory_estimate_text(started: Started, peak: int | None) -> Text:
    """"estimated X GiB, peak so far Y GiB" for the side panel, on rows of their own below the system panel
    (whose last row ends in a bar); empty without an estimate."""
    estimate = (started.memory_estimate or {}).get("total_bytes")
    text = Text()
    if estimate:
        text.append(f"\nestimated {gib(estimate)},\n", style="dim")
        text.append("peak so far " + (gib(peak) if peak else "…"))
    return text


def epoch_text(step: dict, started: Started, total: int | None) -> str:
    """'epoch 0.32/3'; on a run that max_steps ends before its epochs, 'epoch 0.32' (a total of 3 would mislead)."""
    epoch, epochs, done = step["epoch"], started.epochs, step.get("step")
    capped = bool(total and done and epochs and epoch / done * total < epochs - 0.01)
    return f"epoch {epoch:.2f}" + (f"/{epochs:g}" if epochs and not capped else "")


def planned_steps(run) -> int | None:
    """The run's training.max_steps from its config.yaml (when set), for the header before the trainer says it."""
    from lora_tui.core.config import ConfigError, load_config

    try:
        steps = load_config(run.config_path).training.max_steps
    except (ConfigError, OSError):
        return None
    return steps if steps and steps > 0 else None


def memory_peak(events: list[dict], peak: int | None) -> int | None:
    """Highest memory seen: the trainer's own peak (memory events), else RSS / GPU memory samples."""
    for event in events:
        kind = event.get("type")
        if kind == "memory" and event.get("memory_peak_bytes"):
            peak = max(peak or 0, event["memory_peak_bytes"])
        elif kind == "system":
            used = [g.get("mem_used") or 0 for g in event.get("gpus") or []] or [event.get("rss") or 0]
            peak = max(peak or 0, max(used)) or peak
    return peak


class TrainingScreen(WizardScreen):
    STEP = "training"
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("d", "detach", "Detach"),
        Binding("ctrl+n", "app.next_step", "Chat"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history = RunHistory()
        self.run_state = "missing"
        self._following: str | None = None
        self._memory_peak: int | None = None
        self._planned: tuple[str, int | None] | None = None  # (run path, its config's max_steps)
        self._since = time.monotonic()  # when following began: the clock of a trainer still starting

    @on(events.Mount)
    def _start_clock(self) -> None:
        # Between events (minutes before step 1, long steps) the clocks move on: elapsed, ETA, what it does.
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self.state.run is not None and self.run_state in ACTIVE + ("created",):
            self._render_all()

    def compose_body(self) -> ComposeResult:
        with Vertical(id="training-empty", classes="body"):
            yield Label("No training run yet.", classes="title")
            yield Static("Set the parameters and press ctrl+n there to start one, or open a run below "
                         "(Enter). From a shell: lora-tui --run runs/NAME", classes="hint")
            table = DataTable(id="runs", cursor_type="row")
            table.add_columns("Run", "State", "Step", "Loss", "Model")
            yield table
        with Vertical(id="training-body", classes="body"):
            yield Static(id="run-header")
            yield ProgressBar(id="progress", show_eta=False)
            with Horizontal(id="training-main"):
                yield LossPlot(id="loss-plot")
                with Vertical(id="training-side"):
                    yield Static(id="now")
                    yield Static(id="system")
            yield Static(id="outcome")
            yield Static(id="log-tail")

    # --- which run -------------------------------------------------------------------------
    def sync_from_state(self) -> None:
        run = self.state.run
        has_run = run is not None
        self.query_one("#training-empty").display = not has_run
        self.query_one("#training-body").display = has_run
        if not has_run:
            self._list_runs()
            return
        if self._following != str(run.path):
            self._following = str(run.path)
            self.history = RunHistory()
            self._memory_peak = None
            self._since = time.monotonic()
            self.run_state = run.state()
            self._render_all(plot=True)
            self.follow(run)

    def state_changed(self, what: str) -> None:
        if what == "run":
            self.sync_from_state()

    def _list_runs(self) -> None:
        from lora_tui.core.run.runs import list_runs

        table = self.query_one("#runs", DataTable)
        table.clear()
        for summary in list_runs(self.state.config.output.runs_dir)[:50]:
            table.add_row(summary.name, summary.state, f"{summary.step or 0}/{summary.max_steps or '?'}",
                          number(summary.loss), summary.model or "", key=str(summary.path))

    @on(DataTable.RowSelected, "#runs")
    def _open_run(self, event: DataTable.RowSelected) -> None:
        from lora_tui.core.run.runs import RunDirectory

        self.state.run = RunDirectory(event.row_key.value)
        self.sync_from_state()

    # --- following ---------------------------------------------------------------------------
    @thread_worker("follow")
    def follow(self, run) -> None:
        worker = get_current_worker()
        offset, log_signature, last_state = 0, None, None
        while not worker.is_cancelled:
            events, offset = run.read_events_from(offset)
            state = run.state()
            tail = None
            try:
                stat = run.log_path.stat()
                signature = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                signature = None
            if signature != log_signature:
                log_signature = signature
                tail = read_log_tail(run.log_path)
            if events or tail is not None or state != last_state:
                self.post_message(RunUpdate(str(run.path), events, state, tail))
            last_state = state
            if state in ENDED and not events:
                return  # the trainer is gone and everything it wrote has been read
            time.sleep(POLL_SECONDS)

    @on(RunUpdate)
    def _update(self, message: RunUpdate) -> None:
        if message.path != self._following:
            return
        plot_changed = self.history.add(message.events)
        self._memory_peak = memory_peak(message.events, self._memory_peak)
        if message.state != self.run_state:
            self.call_later(self.refresh_bindings)  # Stop / Detach come and go with the trainer
        self.run_state = message.state
        if message.log_tail is not None:
            lines = [readable_log_line(line) for line in message.log_tail]
            self.query_one("#log-tail", Static).update(Text("\n".join(lines), style="dim",
                                                            no_wrap=True, overflow="ellipsis"))
        self._render_all(plot=plot_changed)
        if message.state in ENDED:
            self.app.notify_screens("run-ended")

    # --- drawing -------------------------------------------------------------------------------
    def _render_all(self, plot: bool = False) -> None:
        h, run = self.history, self.state.run
        started = h.started or Started()
        step = h.last_step or {}
        header = Text(no_wrap=True, overflow="ellipsis")
        header.append(f"{run.name} ", style="bold")
        header.append(f"{self.run_state}", style=STATE_STYLE.get(self.run_state, ""))
        if h.started is not None:
            header.append(f"  {started.method or ''} on {started.device or '?'} {started.precision or ''}  ")
            header.append(f"{count(started.trainable_params)} of {count(started.total_params)} "
                          "params trained", style="dim")
            if batch := started.batch:  # what micro_batch / checkpointing auto chose for this run
                size = batch.describe().split(" = ")[0]  # '8 x 2' or '4096 tokens x 4': the header is one line
                header.append(f"  batch {size}" + (", checkpointing" if batch.gradient_checkpointing else ""), style="dim")
        header.append("\n")
        if h.max_steps is None and (self._planned is None or self._planned[0] != str(run.path)):
            self._planned = (str(run.path), planned_steps(run))  # read once per run, not at every tick
        total = h.max_steps or (self._planned[1] if self._planned else None)
        # Most wanted first: on a narrow terminal the end of the line is what gets cut.
        header.append(f"step {h.step}/{total or '?'}")
        elapsed, eta = h.live_step(time.monotonic() if self.run_state in ACTIVE else None)  # ticking while active
        if h.finished and h.finished.get("runtime_s") is not None:
            elapsed = h.finished["runtime_s"]  # the figure "Finished in" gives: the final eval and the save included
        if self.run_state in ACTIVE and eta is not None:
            header.append(f"  ETA {duration(eta)}", style="bold")
        if step.get("epoch") is not None:
            header.append(f"  {epoch_text(step, started, total)}")
        if elapsed is not None:
            header.append(f"  elapsed {duration(elapsed)}")
        if started.num_train_rows is not None:
            header.append(f"  {started.num_train_rows} train / {started.num_eval_rows or 0} eval rows",
                          style="dim")
        self.query_one("#run-header", Static).update(header)
        progress = self.query_one("#progress", ProgressBar)
        progress.update(total=total or None, progress=h.step if total else 0)
        if h.fraction >= 1.0 and total:
            progress.update(progress=total)
        self.query_one("#now", Static).update(now_panel(h))
        self.query_one("#system", Static).update(system_panel(h.system, ended=self.run_state in ENDED)
                                                 + memory_estimate_text(started, self._memory_peak))
        self.query_one("#outcome", Static).update(self._outcome_text())
        if plot:
            self.query_one(LossPlot).show(h)

    def _outcome_text(self) -> Text:
        outcome = self.history.outcome
        run = self.state.run
        if outcome is None:
            if self.run_state == "dead":
                return Text(f"The trainer died without a word (killed?). Continue it: lora-tui train --resume "
                            f"{run.path}   Log: {run.log_path}", style="bold red")
            waiting = self.history.waiting_text(time.monotonic()) if self.run_state in ACTIVE else None
            if waiting:  # a start-up phase or an evaluation, with its clock (core/train/run_progress.py)
                return Text(waiting[:1].upper() + waiting[1:], style="yellow")
            if self.run_state in ("created", "starting"):
                return Text(f"Starting the trainer… {duration(time.monotonic() - self._since)}", style="yellow")
            return Text("")
        kind = outcome.get("type")
        if kind == "finished":
            text = Text(f"✓ Finished in {duration(outcome.get('runtime_s'))}: ", style="bold green")
            text.append(f"train loss {number(outcome.get('train_loss'))}, eval {number(outcome.get('eval_loss'))}. ")
            text.append("ctrl+n: chat with it", style="bold")
            text.append(f"\nAdapter: {outcome.get('adapter') or run.adapter_dir}", style="dim")
            return text
        if kind == "stopped":
            text = Text(f"Stopped at step {outcome.get('step')} ({outcome.get('reason', '')}). ", style="bold yellow")
            if outcome.get("adapter"):
                text.append(f"Adapter saved: {outcome['adapter']}.  ctrl+n: chat with it.  ")
            text.append(f"Continue: lora-tui train --resume {quoted(run.path)}", style="dim")
            return text
        text = Text(f"✗ Failed: {outcome.get('reason', '')}", style="bold red")
        if outcome.get("fix"):
            text.append(f"\nFix: {outcome['fix']}", style="yellow")
        text.append(f"\nFull log: {outcome.get('log') or run.log_path}", style="dim")
        return text

    # --- keys ------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Stop and Detach are offered only while a trainer is at work (a finished run has neither)."""
        if action in ("stop", "detach"):
            return self.state.run is not None and self.run_state in ACTIVE
        return True

    def action_stop(self) -> None:
        run = self.state.run
        if run is None or self.run_state not in ACTIVE:
            self.notify("No running training to stop.", timeout=4)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.backend.stop_run(run)
                self.notify("Stop requested: the trainer saves a checkpoint and the adapter, then ends.", timeout=6)

        self.app.push_screen(Confirm("Stop training?", "The trainer writes a checkpoint and saves the adapter "
                                     "so far, then ends. You can continue it later with --resume.",
                                     yes="Stop", danger=True), answered)

    def action_detach(self) -> None:
        if self.state.run is None or self.run_state not in ACTIVE:
            self.notify("Nothing is training: quit with ctrl+q.", timeout=4)
            return
        self.app.detach()

    def next_refusal(self) -> str | None:
        run = self.state.run
        if run is None:
            return "No run yet: start one from the Parameters step."
        if not (run.adapter_dir / "adapter_config.json").is_file():
            if self.run_state in ACTIVE:
                return "The adapter is saved when training finishes (or when you stop it with s)."
            return f"This run has no adapter in {run.adapter_dir}."
        return None
