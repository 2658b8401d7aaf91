"""Plain-terminal rendering of run events, shared by `train` (foreground) and `attach`."""

from __future__ import annotations

import sys
import time

from lora_tui.core.run.history import RunHistory, progress_text
from lora_tui.core.run.runs import STATES_DONE, RunDirectory, quoted
from lora_tui.core.run.started import Started
from lora_tui.core.units import human_duration


def bar(done: int, total: int, width: int = 24) -> str:
    frac = 0 if not total else min(max(done / total, 0), 1)
    filled = int(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {frac:4.0%}"


def describe(event: dict, history: RunHistory | None = None) -> str | None:
    """One line for an event, or None for events not worth a line (system samples).
    ``history`` (the fold so far) fills in what an event leaves out, such as the step total."""
    kind = event.get("type")
    if kind == "started":
        s = Started.from_event(event)
        trainable, total = s.trainable_params or 0, s.total_params or 0
        return (f"started: {s.method}{_objective(s)} on {s.model} ({s.device}, {s.precision}), "
                f"{s.num_train_rows} train / {s.num_eval_rows} eval rows, "
                f"{s.max_steps} steps\n         trainable params: {trainable:,} of "
                f"{total:,} ({100 * trainable / max(total, 1):.3f}%)"
                f", targets: {', '.join(s.target_modules or [])}" + _engine_line(s)
                + (f"\n         validation: {line}" if (line := (s.data or {}).get("validation_line")) else ""))
    if kind == "step":
        tps = event.get("tokens_per_s")
        total = event.get("max_steps") or (history.max_steps if history else None)
        return (f"step {event['step']}/{total or '?'} {bar(event['step'], total or 0)} "
                f"epoch {event.get('epoch', 0):.2f}  loss {event.get('loss', float('nan')):.4f}  "
                f"lr {event.get('lr') or 0:.2e}  {f'{tps:.0f} tok/s' if tps else '-- tok/s'}  ETA {human_duration(event.get('eta_s'))}"
                + _rewards(event))
    if kind == "eval":
        if event.get("reward_margin") is not None:  # dpo / kto: perplexity means nothing for their loss
            return f"eval ({event.get('phase')}) at step {event.get('step')}: loss {event.get('eval_loss'):.4f}" + _rewards(event)
        return f"eval ({event.get('phase')}) at step {event.get('step')}: loss {event.get('eval_loss'):.4f}, perplexity {event.get('perplexity')}"
    if kind == "progress":
        return progress_text(event)
    if kind == "checkpoint":
        return f"checkpoint at step {event.get('step')}: {event.get('path')}"
    if kind == "log":
        return f"{event.get('level', 'info')}: {event.get('message')}"
    if kind == "finished":
        return (f"finished at step {event.get('step')} in {human_duration(event.get('runtime_s'))}: train loss "
                f"{_four(event.get('train_loss'))}, eval loss {_four(event.get('eval_loss'))}\nadapter: {event.get('adapter')}")
    if kind == "stopped":
        return f"stopped at step {event.get('step')} ({event.get('reason')})\nadapter: {event.get('adapter')}"
    if kind == "failed":
        fix = f"\n  fix: {event['fix']}" if event.get("fix") else ""
        return f"FAILED: {event.get('reason')}{fix}\n  log: {event.get('log')}"
    return None


def _four(value) -> str:
    """A loss as the step lines show it (4 decimals), not the 16 digits a float prints."""
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


NO_TRAINER_WAIT_S = 10.0  # attach gives up when no trainer holds the run (and nothing new arrives) this long


def follow(run: RunDirectory, live: bool = True, out=None, history: RunHistory | None = None) -> str:
    """Print the run's history, then (live) new events until it ends. Returns the final state.
    On a terminal, step lines overwrite each other; elsewhere each is printed. Given the ``history`` of an
    earlier call (following again after Ctrl-C or SIGTERM), only what came since is printed. ``out``: the
    stream written to, sys.stdout as it is at the call (not at import: pytest's capsys, a redirected CLI)."""
    out = out if out is not None else sys.stdout
    tty = out.isatty()
    history, pending_step = history if history is not None else RunHistory(), False
    no_trainer_since = None
    waited = time.monotonic()
    shown, printed = None, {}  # the live line on the terminal; when progress was last printed (not a terminal)
    while True:
        events = history.poll(run)
        for event in events:
            try:
                line = describe(event, history)
            except (KeyError, TypeError, ValueError, AttributeError):  # a corrupted event: say so, go on
                line = f"(an unreadable {str(event.get('type', 'unknown'))[:20]} event, seq {event.get('seq')}, skipped)"
            if line is None or (event["type"] == "progress" and not tty and not _worth_a_line(event, printed)):
                continue
            if event["type"] in ("step", "progress") and tty:
                out.write("\r\033[K" + line)
                pending_step, shown = True, line
            else:
                if pending_step:
                    out.write("\n")
                    pending_step = False
                out.write(line + "\n")
            out.flush()
        state = run.state()
        if events or state in ("starting", "running", "stopping") or run.is_locked():
            no_trainer_since = None
        elif no_trainer_since is None:
            no_trainer_since = time.monotonic()
        elif live and time.monotonic() - no_trainer_since > NO_TRAINER_WAIT_S:  # never wait forever
            if pending_step:
                out.write("\n")
            why = ("its status.json cannot be read" if not run.status_readable() else f"its state is '{state}'")
            out.write(f"No trainer is running for {run.path} ({why}), so there is nothing to follow. "
                      f"Fix: `lora-tui train --resume {quoted(run.path)}` continues it from its last complete checkpoint.\n")
            return state
        if not live or (not events and (state in STATES_DONE or state == "dead")):
            if pending_step:
                out.write("\n")
            if state == "dead":
                why = "" if run.status_readable() else "; its status.json cannot be read and its events never end"
                out.write(f"The trainer is no longer running (killed?{why}). Continue with: "
                          f"lora-tui train --resume {quoted(run.path)}\n")
            return state
        if not events:
            if tty and live and state in ("created", "starting", "running", "stopping"):
                ticking = _live_line(history, waited)  # between events the clocks move on (issue 24 item 5)
                if ticking and ticking != shown:
                    out.write("\r\033[K" + ticking)
                    out.flush()
                    pending_step, shown = True, ticking
            time.sleep(0.5)


QUIET_PROGRESS_S = 15.0  # not a terminal (a log file): an evaluation's progress at most every this many seconds


class LiveLine:
    """One status line that moves while a command waits (`stop`, `bench`): rewritten in place on a terminal
    (cut to its width); elsewhere printed when its ``key`` changes, at most every QUIET_PROGRESS_S seconds
    (``now_too``: at once, e.g. another bench arm), so a log gets a line now and then, not one a second."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.shown, self.key, self.printed = "", None, None

    def show(self, text: str, key: object = None, now_too: bool = False) -> None:
        import shutil

        if self.tty:
            text = text[:max(20, shutil.get_terminal_size().columns - 1)]
            if text != self.shown:
                self.out.write("\r\033[K" + text)
                self.out.flush()
                self.shown = text
            return
        key = text if key is None else key
        now = time.monotonic()
        if self.printed is None or now_too or (key != self.key and now - self.printed >= QUIET_PROGRESS_S):
            self.out.write(text + "\n")
            self.out.flush()
            self.key, self.printed = key, now

    def end(self) -> None:
        """Leave the terminal's line (the next output starts on a line of its own)."""
        if self.tty and self.shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self.shown = ""


def _worth_a_line(event: dict, printed: dict) -> bool:
    """Off a terminal, every start-up phase, and an evaluation's first batch, last batch and one every
    QUIET_PROGRESS_S seconds: a log shows an evaluation moving without a line every two seconds."""
    if event.get("what") != "eval":
        return True
    now = time.monotonic()
    if event.get("done") in (1, event.get("total")) or now - printed.get("eval", 0.0) >= QUIET_PROGRESS_S:
        printed["eval"] = now
        return True
    return False


def _live_line(history: RunHistory, since: float) -> str | None:
    """The line a terminal keeps rewriting while no event comes: what the trainer is doing (a start-up phase,
    an evaluation) or the latest step, with its clocks moved on; before any word from the trainer, how long
    it has been starting (``since``: when following began)."""
    now = time.monotonic()
    if history.progress:
        return history.waiting_text(now)
    if history.last_step:
        elapsed, eta = history.live_step(now)
        line = describe({**history.last_step, "eta_s": eta}, history)
        return line + (f"  elapsed {human_duration(elapsed)}" if elapsed is not None else "")
    if history.started is None and history.outcome is None:
        return f"starting the trainer... {human_duration(now - since)}"
    return None


def _objective(started: Started) -> str:
    """' DPO (beta 0.1, sigmoid; reference: ...)' for a preference run, '' for sft."""
    method, pref = started.training_method, started.preference or {}
    if not method or method == "sft":
        return ""
    start = f", from {started.init_adapter}" if started.init_adapter else ""
    return (f" {method.upper()} (beta {pref.get('beta')}, {pref.get('loss_type')} loss{start}; "
            f"reference: {pref.get('reference')})")


def _rewards(event: dict) -> str:
    """dpo / kto: '  margin 0.42 acc 88% logp -41.2/-55.0' (what a step or eval logged)."""
    if event.get("reward_margin") is None and event.get("logp_chosen") is None:
        return ""
    parts = [f"margin {event['reward_margin']:.3f}" if event.get("reward_margin") is not None else None,
             f"acc {100 * event['reward_accuracy']:.0f}%" if event.get("reward_accuracy") is not None else None,
             f"logp {event['logp_chosen']:.1f}/{event['logp_rejected']:.1f}"
             if event.get("logp_chosen") is not None and event.get("logp_rejected") is not None else None,
             f"kl {event['kl']:.3f}" if event.get("kl") is not None else None]
    return "  " + " ".join(p for p in parts if p)


def _engine_line(started: Started) -> str:
    """How the step runs, with what micro_batch / checkpointing auto decided and why."""
    if (batch := started.batch) is None:
        return ""
    why = batch.reasons.get("micro_batch", "")
    ckpt = "on" if batch.gradient_checkpointing else "off"
    return (f"\n         batch {batch.describe()}"
            + (f" ({why})" if why and why != "set in the config" else "")
            + f"; checkpointing {ckpt}; {started.batching}, {started.attention}, "
            + "+".join(started.kernels or []))

